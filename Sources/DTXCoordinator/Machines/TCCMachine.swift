import DTXProtocol

/// TCC (the documented Try, Confirm, Finalize / Cancel), as phases of the log:
///
/// ```
/// pending/try ──all tried──▶ pending/confirm_pending ──confirm+finalize everywhere──▶ completed/confirm
///      │ (commit point: the confirm_pending write, durable; the abort write is durable too)
///      └──a try refused or out of time──▶ pending/cancel ──cancel everywhere──▶ failed/cancel
/// ```
/// After the commit point nothing is cancelled: confirm and finalize are retried until they succeed.
public struct TCCMachine: PhaseTable {
    public enum Phase: String, CaseIterable, Sendable {
        case trying = "try"
        case confirmPending = "confirm_pending"
        case confirmed = "confirm"
        case cancelling = "cancel"
    }

    public let mode = Mode.tcc
    public var firstPhase: String { Phase.trying.rawValue }

    public func step(_ phase: Phase) -> Step? {
        switch phase {
        case .trying: .firstPhase(BranchStep(.tccTry, reaches: .tried), .concurrent)
        case .confirmPending:
            .secondPhase([BranchStep(.tccConfirm, reaches: .confirmPending), BranchStep(.tccFinalize, reaches: .confirmed)], .concurrent)
        case .cancelling: .secondPhase([BranchStep(.tccCancel, reaches: .cancelled)], .concurrent)
        case .confirmed: nil
        }
    }

    public func transition(_ phase: Phase, _ outcome: StepOutcome) -> Transition? {
        switch (phase, outcome) {
        case (.trying, .succeeded): Transition(phase: Phase.confirmPending.rawValue, status: .pending, durable: true)
        case (.trying, .failed(let reason, _)): Transition(phase: Phase.cancelling.rawValue, status: .pending, error: reason, durable: true)
        case (.confirmPending, .succeeded): Transition(phase: Phase.confirmed.rawValue, status: .completed)
        case (.cancelling, .succeeded): Transition(phase: Phase.cancelling.rawValue, status: .failed)
        case (.confirmPending, .failed), (.cancelling, .failed), (.confirmed, _): nil  // a second phase only succeeds; confirm is final
        }
    }

    public func decision(_ phase: Phase) -> Decision? {
        switch phase {
        case .trying: nil
        case .confirmPending, .confirmed: .commit
        case .cancelling: .abort
        }
    }
}
