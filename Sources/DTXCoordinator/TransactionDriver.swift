import DTXProtocol
import Foundation
import Logging
import Prometheus

/// Moves a global transaction through its mode's state machine, logging every decision before acting on it.
///
/// The three machines (`TCCMachine`, `SagaMachine`, `XAMachine`) share this driver: the log, the branch caller
/// and the retry policy; they differ only in their transitions.
struct TransactionDriver: Sendable {
    let log: TransactionLog
    let caller: BranchCaller
    let registry: PrometheusCollectorRegistry
    let logger: Logger
    /// XA prepares at every participant at once instead of in order (see `XAMachine`).
    var xaConcurrentPrepare = false

    /// Drives `transaction` until it is final, or until the second phase runs past `until` (then the transaction is
    /// postponed: handed back to the recovery loop with its next attempt time in the log).
    func drive(_ transaction: GlobalTransaction, until: ContinuousClock.Instant) async throws -> GlobalTransaction {
        var transaction = transaction
        do {
            while !transaction.isFinal {
                switch transaction.mode {
                case .tcc: try await TCCMachine.advance(&transaction, driver: self, until: until)
                case .saga: try await SagaMachine.advance(&transaction, driver: self, until: until)
                case .xa: try await XAMachine.advance(&transaction, driver: self, until: until)
                }
            }
        } catch is Postponed {
            let delay = caller.policy.backoff(attempt: transaction.attempts)
            try await log.postpone(transaction, delay: delay)
            logger.info("second phase postponed", metadata: [
                "dtx.worker_event_id": "\(transaction.id)", "dtx.phase": "\(transaction.phase.rawValue)", "dtx.retry_in": "\(delay)",
            ])
            return transaction
        }
        let outcome = transaction.status.rawValue
        registry.counter("dtx_transactions_total", [("mode", transaction.mode.rawValue), ("outcome", outcome)]).increment()
        registry.latencyHistogram("dtx_transaction_duration_seconds", [("mode", transaction.mode.rawValue)])
            .record(.milliseconds(Int64(-transaction.createdAt.timeIntervalSinceNow * 1000)))
        return transaction
    }

    /// Logs a move to `phase` (with `status` and `error`); from here on the transaction acts on it.
    func move(_ transaction: inout GlobalTransaction, to phase: Phase, status: GlobalStatus? = nil, error: String? = nil) async throws {
        transaction.phase = phase
        if let status { transaction.status = status }
        if let error { transaction.errorMessage = error }
        try await log.record(transaction)
        logger.debug("transaction moved", metadata: [
            "dtx.worker_event_id": "\(transaction.id)", "dtx.phase": "\(phase.rawValue)", "dtx.status": "\(transaction.status.rawValue)",
        ])
    }

    // MARK: Shared steps

    /// The first phase at every branch at once, each retried within the deadline.
    /// Returns nil when all succeeded, else the reason for the abort.
    func firstPhaseConcurrently(_ op: BranchOperation, _ transaction: inout GlobalTransaction, success: BranchRecord.State) async -> String? {
        let id = transaction.id
        let deadline = transaction.deadline
        let results = await withTaskGroup(of: (Int, BranchRecord, CallOutcome).self) { group in
            for (index, branch) in transaction.branches.enumerated() {
                group.addTask {
                    var branch = branch
                    let outcome = await caller.callWithinDeadline(op, &branch, transaction: id, deadline: deadline)
                    return (index, branch, outcome)
                }
            }
            return await group.reduce(into: [(Int, BranchRecord, CallOutcome)]()) { $0.append($1) }
        }
        var failure: String?
        for (index, branch, outcome) in results.sorted(by: { $0.0 < $1.0 }) {
            transaction.branches[index] = branch
            if let reason = apply(outcome, op: op, to: &transaction.branches[index], success: success) {
                failure = failure ?? reason
            }
        }
        return failure
    }

    /// The first phase one branch after the other, stopping at the first failure.
    func firstPhaseInOrder(_ op: BranchOperation, _ transaction: inout GlobalTransaction, success: BranchRecord.State) async -> String? {
        for index in transaction.branches.indices {
            if let failure = await firstPhase(op, &transaction, branch: index, success: success) { return failure }
        }
        return nil
    }

    /// A first-phase call at one branch (Saga's steps run one by one). Returns the reason for the abort, if any.
    func firstPhase(_ op: BranchOperation, _ transaction: inout GlobalTransaction, branch index: Int, success: BranchRecord.State) async -> String? {
        let outcome = await caller.callWithinDeadline(op, &transaction.branches[index], transaction: transaction.id, deadline: transaction.deadline)
        return apply(outcome, op: op, to: &transaction.branches[index], success: success)
    }

    private func apply(_ outcome: CallOutcome, op: BranchOperation, to branch: inout BranchRecord, success: BranchRecord.State) -> String? {
        let step = "\(op.rawValue) at \(branch.participant) (product \(branch.productId), quantity \(branch.quantity))"
        switch outcome {
        case .done(let response):
            // a try that finds its branch cancelled already answers 200 with that row state: not a success
            if response.status == .cancelled || response.status == .compensated {
                branch.state = .refused
                return "\(step): the branch was already cancelled"
            }
            branch.state = success
            branch.lastError = nil
            return nil
        case .refused(let error):
            branch.state = .refused
            branch.lastError = "\(op.rawValue): \(error)"
            return "\(step) refused: \(error.code): \(error.message)"
        case .retry(let reason):
            return "\(step) did not succeed within the global timeout: \(reason)"
        }
    }

    /// Second-phase calls at every branch at once, each retried until done; `ops` run in order per branch.
    func secondPhaseConcurrently(_ ops: [BranchOperation], _ transaction: inout GlobalTransaction, states: [BranchRecord.State], until: ContinuousClock.Instant) async throws {
        let id = transaction.id
        let results = await withTaskGroup(of: (Int, BranchRecord, Bool).self) { group in
            for (index, branch) in transaction.branches.enumerated() {
                group.addTask {
                    var branch = branch
                    do {
                        for (op, state) in zip(ops, states) where !Self.reached(branch.state, state, among: states) {
                            _ = try await caller.callUntilDone(op, &branch, transaction: id, until: until)
                            branch.state = state
                            branch.lastError = nil
                        }
                        return (index, branch, true)
                    } catch {
                        return (index, branch, false)
                    }
                }
            }
            return await group.reduce(into: [(Int, BranchRecord, Bool)]()) { $0.append($1) }
        }
        var allDone = true
        for (index, branch, done) in results {
            transaction.branches[index] = branch
            allDone = allDone && done
        }
        if !allDone { throw Postponed() }
    }

    /// One second-phase call at one branch (Saga's confirmations and compensations run one by one).
    func secondPhase(_ op: BranchOperation, _ transaction: inout GlobalTransaction, branch index: Int, state: BranchRecord.State, until: ContinuousClock.Instant) async throws {
        guard transaction.branches[index].state != state else { return }
        _ = try await caller.callUntilDone(op, &transaction.branches[index], transaction: transaction.id, until: until)
        transaction.branches[index].state = state
        transaction.branches[index].lastError = nil
    }

    /// Whether a branch already stands at `target` or past it in `sequence` (so a resumed second phase skips it).
    static func reached(_ current: BranchRecord.State, _ target: BranchRecord.State, among sequence: [BranchRecord.State]) -> Bool {
        guard let currentIndex = sequence.firstIndex(of: current), let targetIndex = sequence.firstIndex(of: target) else { return false }
        return currentIndex >= targetIndex
    }
}
