/// Saga (the documented reserve A, reserve B, confirm A, confirm B; compensate in reverse), as phases of the log:
///
/// ```
/// pending/reserve ──every step reserved, in order──▶ pending/confirm ──confirm each, in order──▶ completed/confirm
///      │ (commit point is the confirm write)
///      └──a step refused or out of time──▶ failed/compensate ──compensate each, in reverse──▶ compensated/compensate
/// ```
/// `failed` is written first, with the step and the reason, as the documented controller does; the compensations
/// then run until each succeeds (every step is compensated: one never reached is a null compensation, which also
/// keeps a late reserve from landing).
enum SagaMachine {
    static func advance(_ transaction: inout GlobalTransaction, driver: TransactionDriver, until: ContinuousClock.Instant) async throws {
        switch transaction.phase {
        case .reserve:
            for index in transaction.branches.indices where transaction.branches[index].state != .reserved {
                if let failure = await driver.firstPhase(.sagaReserve, &transaction, branch: index, success: .reserved) {
                    try await driver.move(&transaction, to: .compensate, status: .failed, error: "step \(index + 1): \(failure)")
                    return
                }
            }
            try await driver.move(&transaction, to: .tccConfirm)
        case .tccConfirm:
            for index in transaction.branches.indices {
                try await driver.secondPhase(.sagaConfirm, &transaction, branch: index, state: .confirmed, until: until)
            }
            try await driver.move(&transaction, to: .tccConfirm, status: .completed)
        case .compensate:
            for index in transaction.branches.indices.reversed() {
                try await driver.secondPhase(.sagaCompensate, &transaction, branch: index, state: .compensated, until: until)
            }
            try await driver.move(&transaction, to: .compensate, status: .compensated)
        case .tccTry, .confirmPending, .cancel, .prepare, .commit, .rollback:
            preconditionFailure("Saga transaction \(transaction.id) in phase \(transaction.phase)")
        }
    }
}
