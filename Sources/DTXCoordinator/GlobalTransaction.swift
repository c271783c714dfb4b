import DTXProtocol
import Foundation

/// The phases of the coordinator's log, for all three modes. Which arrows exist is up to each mode's machine.
public enum Phase: String, Sendable, Codable {
    // TCC
    case tccTry = "try", confirmPending = "confirm_pending", tccConfirm = "confirm", cancel
    // Saga (its commit point shares the word 'confirm' with TCC's final phase)
    case reserve, compensate
    // XA
    case prepare, commit, rollback

    public static func first(for mode: Mode) -> Phase {
        switch mode {
        case .tcc: .tccTry
        case .saga: .reserve
        case .xa: .prepare
        }
    }

    /// The decision a phase stands for: the first phase has none yet.
    public var decision: Decision? {
        switch self {
        case .tccTry, .reserve, .prepare: nil
        case .confirmPending, .tccConfirm, .commit: .commit
        case .cancel, .compensate, .rollback: .abort
        }
    }
}

/// One global transaction (a `worker_events` row) as the coordinator drives it.
public struct GlobalTransaction: Sendable {
    public var id: Int64
    public var mode: Mode
    public var status: GlobalStatus
    public var phase: Phase
    public var errorMessage: String?
    public var branches: [BranchRecord]
    /// End of the first phase: past it, a first phase that has not succeeded is aborted.
    public var deadline: Date
    public var attempts: Int
    public var createdAt: Date

    public var isFinal: Bool { status.isFinal(for: mode) }
}

extension GlobalTransaction {
    /// The wire form, as `GET /v1/transactions/{id}` would show it right after the last write.
    var view: TransactionView {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return TransactionView(
            id: id, mode: mode, status: status, phase: phase.rawValue, decision: phase.decision, errorMessage: errorMessage,
            branches: branches, attempts: attempts, createdAt: formatter.string(from: createdAt), updatedAt: formatter.string(from: Date()),
            nextRetryAt: nil
        )
    }
}
