import DTXProtocol
import Foundation
import Logging
import Prometheus

/// Drives a global transaction through its mode's machine, logging every transition before acting on it.
///
/// One loop for the three modes: ask the machine for the step of the current phase, run it through the branch caller,
/// ask the machine where the outcome leads, record that (fenced by the lease epoch), and go on until the transaction is
/// no longer open. The machines (`TCCMachine`, `SagaMachine`, `XAMachine`) are pure tables; the log, the branch caller
/// and the retry policy are shared.
struct TransactionDriver: Sendable {
    let log: TransactionLog
    let caller: BranchCaller
    let machines: ModeMachines
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    /// Drives `transaction` until it is no longer open, or until the second phase runs past `until` (then it is
    /// postponed: handed back to the recovery loop with its next attempt time in the log). Throws `LeaseLost` when
    /// another driver holds the transaction now: this one then stops at once.
    func drive(_ transaction: GlobalTransaction, until: ContinuousClock.Instant) async throws -> GlobalTransaction {
        var transaction = transaction
        let machine = machines[transaction.mode]
        do {
            while transaction.isOpen {
                guard let step = machine.step(in: transaction.phase) else {
                    try await markBroken(&transaction, "phase '\(transaction.phase)' is not a phase of \(transaction.mode.rawValue) with work to do")
                    break
                }
                // a driver whose lease has run out by its own clock calls no participant: another may hold the row now
                guard ContinuousClock.now < transaction.leaseValidUntil else { throw TransactionLog.LeaseLost(id: transaction.id) }
                let outcome = try await run(step, &transaction, until: until)
                // a cancelled driver (the coordinator is stopping) decides nothing: recovery goes on from the logged phase
                try Task.checkCancellation()
                guard let transition = machine.transition(from: transaction.phase, after: outcome) else {
                    try await markBroken(&transaction, "\(transaction.mode.rawValue) has no move from phase '\(transaction.phase)' after \(outcome)")
                    break
                }
                try await move(&transaction, transition)
            }
        } catch let unknown as UnknownParticipant {
            try await log.postpone(transaction, delay: UnknownParticipant.setAside)
            transaction.nextRetryAt = Date() + UnknownParticipant.setAside.inSeconds
            logger.error("a transaction names a participant this coordinator does not know: set aside for 10 minutes", metadata: [
                "dtx.worker_event_id": "\(transaction.id)", "dtx.phase": "\(transaction.phase)",
                "dtx.participant": "\(unknown.name)", "dtx.fix": "start the coordinator with --participant \(unknown.name)=URL",
            ])
            return transaction
        } catch is Postponed {
            let delay = caller.policy.backoff(attempt: transaction.attempts)
            try await log.postpone(transaction, delay: delay)
            transaction.nextRetryAt = Date() + delay.inSeconds
            logger.info("second phase postponed", metadata: [
                "dtx.worker_event_id": "\(transaction.id)", "dtx.phase": "\(transaction.phase)", "dtx.retry_in": "\(delay)",
            ])
            return transaction
        }
        registry.counter("dtx_transactions_total", [("mode", transaction.mode.rawValue), ("outcome", transaction.status.rawValue)]).increment()
        registry.latencyHistogram("dtx_transaction_duration_seconds", [("mode", transaction.mode.rawValue)])
            .record(.milliseconds(Int64(-transaction.createdAt.timeIntervalSinceNow * 1000)))
        return transaction
    }

    /// Records `transition`: written only if this driver still holds the row with its epoch and the row is still in
    /// the phase it read; otherwise `LeaseLost`.
    func move(_ transaction: inout GlobalTransaction, _ transition: Transition) async throws {
        let from = transaction.phase
        transaction.phase = transition.phase
        transaction.status = transition.status
        if let error = transition.error { transaction.errorMessage = BranchRecord.note(error) }
        let sent = ContinuousClock.now
        guard try await log.record(transaction, expectedPhase: from, durable: transition.durable) else {
            throw TransactionLog.LeaseLost(id: transaction.id)
        }
        transaction.leaseValidUntil = log.leaseValidUntil(sent: sent)
        if logger.logLevel <= .debug {
            logger.debug("transaction moved", metadata: [
                "dtx.worker_event_id": "\(transaction.id)", "dtx.phase": "\(transaction.phase)", "dtx.status": "\(transaction.status.rawValue)",
            ])
        }
    }

    /// A row the machine has no step or arrow for (written by hand, or by another version): failed, with the reason,
    /// left for an operator; never a crash. It is then no longer open (see the log's `open` column), so recovery
    /// leaves it alone.
    func markBroken(_ transaction: inout GlobalTransaction, _ reason: String) async throws {
        logger.error("transaction cannot be driven: marked failed", metadata: ["dtx.worker_event_id": "\(transaction.id)", "dtx.reason": "\(reason)"])
        try await move(&transaction, Transition(phase: transaction.phase, status: .failed, error: "not driven: \(reason)"))
    }

    // MARK: Steps

    func run(_ step: Step, _ transaction: inout GlobalTransaction, until: ContinuousClock.Instant) async throws -> StepOutcome {
        switch step {
        case .firstPhase(let branchStep, let order):
            return await firstPhase(branchStep, order, &transaction)
        case .secondPhase(let steps, let order):
            // no call may outlive this driver's lease (by then another driver may hold the row): the second phase stops
            // one branch call before it, and what is left goes back to the recovery loop
            try await secondPhase(steps, order, &transaction, until: min(until, transaction.leaseValidUntil - caller.branchTimeout))
            return .succeeded
        }
    }

    /// The first phase at every branch that has not reached its state yet, each retried within the deadline;
    /// concurrently, or in order stopping at the first failure.
    func firstPhase(_ step: BranchStep, _ order: BranchOrder, _ transaction: inout GlobalTransaction) async -> StepOutcome {
        let snapshot = transaction
        var outcomes: [(Int, BranchRecord, CallOutcome)] = []
        switch order {
        case .concurrent:
            outcomes = await withTaskGroup(of: (Int, BranchRecord, CallOutcome).self) { group in
                for (index, branch) in snapshot.branches.enumerated() where branch.state != step.reaches {
                    group.addTask {
                        var branch = branch
                        let outcome = await caller.callWithinDeadline(step.op, &branch, transaction: snapshot)
                        return (index, branch, outcome)
                    }
                }
                // a final refusal decides the abort: the other calls (a participant slow or unreachable, retried) are
                // not run on to the deadline; what they may have done is undone with the rest (every branch gets the
                // undo, and its barrier makes a late first phase do nothing)
                var collected: [(Int, BranchRecord, CallOutcome)] = []
                for await result in group {
                    collected.append(result)
                    if Self.isFinalRefusal(result.2) { group.cancelAll() }
                }
                return collected.sorted { $0.0 < $1.0 }
            }
        case .inOrder, .reverse, .lockOrder:
            for index in order.indices(snapshot.branches) where snapshot.branches[index].state != step.reaches {
                var branch = snapshot.branches[index]
                let outcome = await caller.callWithinDeadline(step.op, &branch, transaction: snapshot)
                outcomes.append((index, branch, outcome))
                guard Self.succeeded(outcome) else { break }
            }
        }
        // the reason given is a final refusal's when there is one (not a call cut short by it, nor one still retrying)
        var failure: StepOutcome = .succeeded
        var refused = false
        for (index, branch, outcome) in outcomes {
            transaction.branches[index] = branch
            if let reason = apply(outcome, step, to: &transaction.branches[index]), failure == .succeeded || (!refused && Self.isFinalRefusal(outcome)) {
                failure = .failed(reason: reason, branch: index)
                refused = Self.isFinalRefusal(outcome)
            }
        }
        return failure
    }

    /// A first-phase answer that aborts the transaction whatever the other branches answer.
    static func isFinalRefusal(_ outcome: CallOutcome) -> Bool {
        switch outcome {
        case .refused: true
        case .done: !succeeded(outcome)
        case .retry: false
        }
    }

    /// A try that finds its branch cancelled already answers 200 with that row state: not a success.
    static func succeeded(_ outcome: CallOutcome) -> Bool {
        guard case .done(let response) = outcome else { return false }
        return response.status != .cancelled && response.status != .compensated
    }

    /// Sets the branch's state from a first-phase outcome; returns the reason for the abort, if any.
    private func apply(_ outcome: CallOutcome, _ step: BranchStep, to branch: inout BranchRecord) -> String? {
        let what = "\(step.op.rawValue) at \(branch.participant) (product \(branch.productId), quantity \(branch.quantity))"
        switch outcome {
        case .done:
            guard Self.succeeded(outcome) else {
                branch.state = .refused
                return "\(what): the branch was already cancelled"
            }
            branch.state = step.reaches
            branch.lastError = nil
            return nil
        case .refused(let error):
            branch.state = .refused
            branch.lastError = BranchRecord.note("\(step.op.rawValue): \(error)")
            return "\(what) refused: \(error.code): \(error.message)"
        case .retry(let reason):
            return "\(what) did not succeed within the global timeout: \(reason)"
        }
    }

    /// The second phase: at every branch, each step not yet reached, retried until it succeeds; concurrently across
    /// branches, or one branch after the other. Throws `Postponed` when `until` comes first.
    func secondPhase(_ steps: [BranchStep], _ order: BranchOrder, _ transaction: inout GlobalTransaction, until: ContinuousClock.Instant) async throws {
        let snapshot = transaction
        let states = steps.map(\.reaches)
        /// The branch as far as it got, and why it stopped short (nil: every step reached).
        @Sendable func advance(_ branch: BranchRecord) async -> (BranchRecord, (any Error)?) {
            var branch = branch
            do {
                var left = steps.filter { !Self.reached(branch.state, $0.reaches, among: states) }[...]
                while let step = left.popFirst() {
                    // batched: TCC's confirm and finalize of this branch go in one call
                    if caller.mergesConfirmAndFinalize, step.op == .tccConfirm, let next = left.first, next.op == .tccFinalize {
                        let response = try await caller.callUntilDone(step.op, &branch, transaction: snapshot, until: until, thenFinalize: true)
                        // a participant that does not know finalize=true (an older version) only confirmed: finalize next
                        if response.status == .confirmPending {
                            branch.state = step.reaches
                        } else {
                            branch.state = left.removeFirst().reaches
                        }
                    } else {
                        _ = try await caller.callUntilDone(step.op, &branch, transaction: snapshot, until: until)
                        branch.state = step.reaches
                    }
                    branch.lastError = nil
                }
                return (branch, nil)
            } catch {
                return (branch, error)
            }
        }
        /// What stopped the phase short: a participant nobody can call sets the transaction aside; anything else
        /// postpones it.
        func stopped(_ errors: [any Error]) -> any Error {
            errors.first { $0 is UnknownParticipant } ?? Postponed()
        }
        switch order {
        case .concurrent:
            let results = await withTaskGroup(of: (Int, BranchRecord, (any Error)?).self) { group in
                for (index, branch) in snapshot.branches.enumerated() {
                    group.addTask {
                        let (branch, error) = await advance(branch)
                        return (index, branch, error)
                    }
                }
                return await group.reduce(into: [(Int, BranchRecord, (any Error)?)]()) { $0.append($1) }
            }
            for (index, branch, _) in results { transaction.branches[index] = branch }
            let errors = results.compactMap(\.2)
            if !errors.isEmpty { throw stopped(errors) }
        case .inOrder, .reverse, .lockOrder:
            for index in order.indices(snapshot.branches) {
                let (branch, error) = await advance(transaction.branches[index])
                transaction.branches[index] = branch
                if let error { throw stopped([error]) }
            }
        }
    }

    /// Whether a branch already stands at `target` or past it in `sequence` (so a resumed second phase skips it).
    static func reached(_ current: BranchRecord.State, _ target: BranchRecord.State, among sequence: [BranchRecord.State]) -> Bool {
        guard let currentIndex = sequence.firstIndex(of: current), let targetIndex = sequence.firstIndex(of: target) else { return false }
        return currentIndex >= targetIndex
    }
}
