/// The three ways dtx drives a global transaction.
public enum Mode: String, Codable, Sendable, CaseIterable {
    /// Try, Confirm, Finalize / Cancel (the documented TCC controller).
    case tcc
    /// Reserve, confirm; compensate in reverse (the documented Saga controller).
    case saga
    /// PostgreSQL native two-phase commit: PREPARE TRANSACTION, COMMIT PREPARED / ROLLBACK PREPARED.
    case xa
}

/// A participant's branch operation, one per route (`/tcc/try`, ...).
public enum BranchOperation: String, Codable, Sendable, CaseIterable {
    case tccTry = "try"
    case tccConfirm = "confirm"
    case tccFinalize = "finalize"
    case tccCancel = "cancel"
    case sagaReserve = "reserve"
    case sagaConfirm = "saga_confirm"
    case sagaCompensate = "compensate"
    case xaPrepare = "prepare"
    case xaCommit = "commit"
    case xaRollback = "rollback"

    public var mode: Mode {
        switch self {
        case .tccTry, .tccConfirm, .tccFinalize, .tccCancel: .tcc
        case .sagaReserve, .sagaConfirm, .sagaCompensate: .saga
        case .xaPrepare, .xaCommit, .xaRollback: .xa
        }
    }

    /// The participant route that serves this operation.
    public var path: String {
        switch self {
        case .tccTry: "/tcc/try"
        case .tccConfirm: "/tcc/confirm"
        case .tccFinalize: "/tcc/finalize"
        case .tccCancel: "/tcc/cancel"
        case .sagaReserve: "/saga/reserve"
        case .sagaConfirm: "/saga/confirm"
        case .sagaCompensate: "/saga/cancel"
        case .xaPrepare: "/xa/prepare"
        case .xaCommit: "/xa/commit"
        case .xaRollback: "/xa/rollback"
        }
    }

    /// The first-phase operations: their 409 is a final refusal; the others are retried until they succeed.
    public var isFirstPhase: Bool { self == .tccTry || self == .sagaReserve || self == .xaPrepare }

    /// For an undo operation (cancel, compensate, rollback), the operation it undoes.
    public var origin: BranchOperation? {
        switch self {
        case .tccCancel: .tccTry
        case .sagaCompensate: .sagaReserve
        case .xaRollback: .xaPrepare
        default: nil
        }
    }
}

/// The status words of the coordinator's `worker_events` rows.
///
/// Which rows are still open (driven by the recovery loop) is the log's `open` column: pending, or a Saga that is
/// failed while its compensations run.
public enum GlobalStatus: String, Codable, Sendable, CaseIterable {
    case pending, completed, failed, compensated
}

/// What the coordinator decided for a global transaction, once it has decided.
public enum Decision: String, Codable, Sendable {
    case commit
    case abort
}

/// The status words of a participant's `transactions` rows.
public enum RowStatus: String, Codable, Sendable {
    case tried = "try"
    case confirmPending = "confirm_pending"
    case confirmed = "confirm"
    case cancelled = "cancel"
    case compensated
}
