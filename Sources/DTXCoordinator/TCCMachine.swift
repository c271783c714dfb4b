/// TCC (the documented Try, Confirm, Finalize / Cancel), as phases of the log:
///
/// ```
/// pending/try ──all tried──▶ pending/confirm_pending ──confirm+finalize everywhere──▶ completed/confirm
///      │ (commit point is the confirm_pending write)
///      └──a try refused or out of time──▶ pending/cancel ──cancel everywhere──▶ failed/cancel
/// ```
/// After the commit point nothing is cancelled: confirm and finalize are retried until they succeed.
enum TCCMachine {
    static func advance(_ transaction: inout GlobalTransaction, driver: TransactionDriver, until: ContinuousClock.Instant) async throws {
        switch transaction.phase {
        case .tccTry:
            if let failure = await driver.firstPhaseConcurrently(.tccTry, &transaction, success: .tried) {
                try await driver.move(&transaction, to: .cancel, error: failure)
            } else {
                try await driver.move(&transaction, to: .confirmPending)
            }
        case .confirmPending:
            try await driver.secondPhaseConcurrently(
                [.tccConfirm, .tccFinalize], &transaction, states: [.confirmPending, .confirmed], until: until
            )
            try await driver.move(&transaction, to: .tccConfirm, status: .completed)
        case .cancel:
            try await driver.secondPhaseConcurrently([.tccCancel], &transaction, states: [.cancelled], until: until)
            try await driver.move(&transaction, to: .cancel, status: .failed)
        case .tccConfirm, .reserve, .compensate, .prepare, .commit, .rollback:
            preconditionFailure("TCC transaction \(transaction.id) in phase \(transaction.phase)")
        }
    }
}
