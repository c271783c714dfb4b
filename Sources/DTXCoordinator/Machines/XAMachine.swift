import DTXProtocol

/// XA on PostgreSQL's two-phase commit, as phases of the log:
///
/// ```
/// pending/prepare ──all prepared──▶ pending/commit ──COMMIT PREPARED everywhere──▶ completed/commit
///      │ (commit point: the commit write, durable)
///      └──a prepare refused or out of time──▶ pending/rollback ──ROLLBACK PREPARED everywhere──▶ failed/rollback
/// ```
/// Prepares go out one branch after the other in lock order (participant name, then product id: the same for every
/// request and every coordinator, whatever order a request lists its branches in), unless `concurrentPrepare` is set.
/// A prepared transaction keeps its row lock until COMMIT PREPARED, so concurrent prepares of transactions that touch
/// the same hot product at two services deadlock across the services (one holds A's row and waits for B's, the other
/// the reverse) until the global timeout aborts both: measured, 24 concurrent transactions on one product, 0 completed.
/// In a fixed order every transaction takes the rows in the same order, and they queue instead.
public struct XAMachine: PhaseTable {
    public enum Phase: String, CaseIterable, Sendable {
        case preparing = "prepare"
        case committing = "commit"
        case rollingBack = "rollback"
    }

    public let mode = Mode.xa
    public var concurrentPrepare = false
    public var firstPhase: String { Phase.preparing.rawValue }

    public func step(_ phase: Phase) -> Step? {
        switch phase {
        case .preparing: .firstPhase(BranchStep(.xaPrepare, reaches: .prepared), concurrentPrepare ? .concurrent : .lockOrder)
        case .committing: .secondPhase([BranchStep(.xaCommit, reaches: .committed)], .concurrent)
        case .rollingBack: .secondPhase([BranchStep(.xaRollback, reaches: .rolledBack)], .concurrent)
        }
    }

    public func transition(_ phase: Phase, _ outcome: StepOutcome) -> Transition? {
        switch (phase, outcome) {
        case (.preparing, .succeeded): Transition(phase: Phase.committing.rawValue, status: .pending, durable: true)
        case (.preparing, .failed(let reason, _)): Transition(phase: Phase.rollingBack.rawValue, status: .pending, error: reason, durable: true)
        case (.committing, .succeeded): Transition(phase: Phase.committing.rawValue, status: .completed)
        case (.rollingBack, .succeeded): Transition(phase: Phase.rollingBack.rawValue, status: .failed)
        case (.committing, .failed), (.rollingBack, .failed): nil
        }
    }

    public func decision(_ phase: Phase) -> Decision? {
        switch phase {
        case .preparing: nil
        case .committing: .commit
        case .rollingBack: .abort
        }
    }
}
