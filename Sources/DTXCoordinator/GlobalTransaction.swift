import DTXProtocol
import Foundation

/// One global transaction (a `worker_events` row) as the coordinator drives it.
public struct GlobalTransaction: Sendable {
    public var id: Int64
    public var mode: Mode
    public var status: GlobalStatus
    /// The phase word of the log; which words a mode has, and their arrows, is its `ModeMachine`'s.
    public var phase: String
    public var errorMessage: String?
    public var branches: [BranchRecord]
    /// End of the first phase, by the log server's clock (what branch requests carry as `not_after`): past it, a first
    /// phase that has not succeeded is aborted.
    public var deadline: Date
    /// The same end on this process's clock, which is what the driver waits by (the two clocks may differ).
    var firstPhaseEnds: ContinuousClock.Instant
    public var attempts: Int
    public var createdAt: Date
    /// The lease epoch this driver holds the row with: every write is conditional on it.
    public var epoch: Int64
    /// When this driver's lease runs out by its own clock, less a margin: past it, it calls no participant.
    var leaseValidUntil: ContinuousClock.Instant
    /// When recovery tries the second phase again, once this driver has postponed it.
    var nextRetryAt: Date?

    /// The end of the first phase as branch requests carry it (`not_after`).
    var notAfter: String { Timestamp.string(deadline) }

    /// Still to be driven: the rule of the log's `open` column (sql/coordinator/002), for the copy in memory.
    public var isOpen: Bool {
        status == .pending || (status == .failed && mode == .saga && phase == SagaMachine.Phase.compensating.rawValue)
    }

    /// The wire form, as `GET /v1/transactions/{id}` would show it right after the last write.
    func view(decision: Decision?) -> TransactionView {
        TransactionView(
            id: id, mode: mode, status: status, phase: phase, decision: decision, errorMessage: errorMessage,
            branches: branches, attempts: attempts, createdAt: Timestamp.string(createdAt), updatedAt: Timestamp.string(Date()),
            nextRetryAt: isOpen ? nextRetryAt.map(Timestamp.string) : nil
        )
    }
}
