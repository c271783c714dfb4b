import DTXProtocol

/// Saga (the documented reserve A, reserve B, confirm A, confirm B; compensate in reverse), as phases of the log:
///
/// ```
/// pending/reserve ──every step reserved, in order──▶ pending/confirm ──confirm each, in order──▶ completed/confirm
///      │ (commit point: the confirm write, durable)
///      └──a step refused or out of time──▶ failed/compensate ──compensate each, in reverse──▶ compensated/compensate
/// ```
/// `failed` is written first, with the step and the reason, as the documented controller does; the compensations then
/// run until each succeeds (every step is compensated: one never reached is a null compensation, which also keeps a
/// late reserve from landing).
public struct SagaMachine: PhaseTable {
    public enum Phase: String, CaseIterable, Sendable {
        case reserving = "reserve"
        case confirming = "confirm"
        case compensating = "compensate"
    }

    public let mode = Mode.saga
    public var firstPhase: String { Phase.reserving.rawValue }

    public func step(_ phase: Phase) -> Step? {
        switch phase {
        case .reserving: .firstPhase(BranchStep(.sagaReserve, reaches: .reserved), .inOrder)
        case .confirming: .secondPhase([BranchStep(.sagaConfirm, reaches: .confirmed)], .inOrder)
        case .compensating: .secondPhase([BranchStep(.sagaCompensate, reaches: .compensated)], .reverse)
        }
    }

    public func transition(_ phase: Phase, _ outcome: StepOutcome) -> Transition? {
        switch (phase, outcome) {
        case (.reserving, .succeeded): Transition(phase: Phase.confirming.rawValue, status: .pending, durable: true)
        case (.reserving, .failed(let reason, let branch)):
            Transition(phase: Phase.compensating.rawValue, status: .failed, error: "step \(branch + 1): \(reason)", durable: true)
        case (.confirming, .succeeded): Transition(phase: Phase.confirming.rawValue, status: .completed)
        case (.compensating, .succeeded): Transition(phase: Phase.compensating.rawValue, status: .compensated)
        case (.confirming, .failed), (.compensating, .failed): nil
        }
    }

    public func decision(_ phase: Phase) -> Decision? {
        switch phase {
        case .reserving: nil
        case .confirming: .commit
        case .compensating: .abort
        }
    }
}
