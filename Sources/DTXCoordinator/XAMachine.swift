/// XA on PostgreSQL's two-phase commit, as phases of the log:
///
/// ```
/// pending/prepare ──all prepared──▶ pending/commit ──COMMIT PREPARED everywhere──▶ completed/commit
///      │ (commit point is the commit write)
///      └──a prepare refused or out of time──▶ pending/rollback ──ROLLBACK PREPARED everywhere──▶ failed/rollback
/// ```
/// Prepares go out one participant after the other, in the configured order, unless `xaConcurrentPrepare` is set.
/// A prepared transaction keeps its row lock until COMMIT PREPARED, so concurrent prepares of transactions that touch
/// the same hot product at two services deadlock across the services (one holds A's row and waits for B's, the other
/// the reverse) until the global timeout aborts both: measured, 24 concurrent transactions on one product, 0 completed.
/// In a fixed order every transaction takes the rows in the same order, and they queue instead.
enum XAMachine {
    static func advance(_ transaction: inout GlobalTransaction, driver: TransactionDriver, until: ContinuousClock.Instant) async throws {
        switch transaction.phase {
        case .prepare:
            if let failure = driver.xaConcurrentPrepare
                ? await driver.firstPhaseConcurrently(.xaPrepare, &transaction, success: .prepared)
                : await driver.firstPhaseInOrder(.xaPrepare, &transaction, success: .prepared)
            {
                try await driver.move(&transaction, to: .rollback, error: failure)
            } else {
                try await driver.move(&transaction, to: .commit)
            }
        case .commit:
            try await driver.secondPhaseConcurrently([.xaCommit], &transaction, states: [.committed], until: until)
            try await driver.move(&transaction, to: .commit, status: .completed)
        case .rollback:
            try await driver.secondPhaseConcurrently([.xaRollback], &transaction, states: [.rolledBack], until: until)
            try await driver.move(&transaction, to: .rollback, status: .failed)
        case .tccTry, .confirmPending, .tccConfirm, .cancel, .reserve, .compensate:
            preconditionFailure("XA transaction \(transaction.id) in phase \(transaction.phase)")
        }
    }
}
