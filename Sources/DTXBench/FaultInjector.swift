import DTXPostgres
import Foundation
import Logging
import PostgresNIO

/// A scenario's fault during one run: a process killed with SIGKILL and restarted, or the coordinator cut from a
/// participant by the relay and healed; then the time until every global transaction begun before the fault has its
/// final outcome.
struct FaultInjector: Sendable {
    let scenario: Scenario
    let stack: Stack
    let coordinatorDatabase: DatabaseURL
    let logger: Logger

    /// What happened, in seconds from the start of the run.
    struct Outcome: Sendable {
        var fault: String
        var faultAt: Double
        var resolvedAt: Double?
    }

    /// Injects the fault `at` into the measured run (after the warm-up), for a run of `mode`; nil without a fault.
    func start(for mode: BenchMode, runStart: ContinuousClock.Instant, warmup: Duration) -> Task<Outcome?, Never>? {
        guard scenario.hasFault else { return nil }
        return Task {
            do {
                return try await inject(mode, runStart: runStart, warmup: warmup)
            } catch {
                logger.error("fault injection failed", metadata: ["dtx.error": "\(error)"])
                return nil
            }
        }
    }

    private func inject(_ mode: BenchMode, runStart: ContinuousClock.Instant, warmup: Duration) async throws -> Outcome? {
        let description: String
        let faultTime: Date
        let faultAt: Double
        if let crash = scenario.crash {
            try await Task.sleep(until: runStart + warmup + .milliseconds(Int64(crash.atSeconds * 1000)), clock: .continuous)
            // "coordinator" is the coordinator that serves this mode: the canonical rows have one of their own
            let target = crash.target == Stack.coordinatorName && !mode.batched && mode.protocolMode != nil
                ? Stack.unbatchedCoordinatorName : crash.target
            faultTime = Date()
            faultAt = (ContinuousClock.now - runStart).inSeconds
            await stack.kill(target)
            try await Task.sleep(for: .milliseconds(Int64(crash.downSeconds * 1000)))
            try await stack.startService(target)
            description = "\(crash.target) killed (SIGKILL), restarted after \(crash.downSeconds) s"
        } else if let partition = scenario.partition {
            try await Task.sleep(until: runStart + warmup + .milliseconds(Int64(partition.atSeconds * 1000)), clock: .continuous)
            faultTime = Date()
            faultAt = (ContinuousClock.now - runStart).inSeconds
            try await stack.cut(Stack.Link.coordinatorTo(partition.participant))
            try await Task.sleep(for: .milliseconds(Int64(partition.forSeconds * 1000)))
            try await stack.heal(Stack.Link.coordinatorTo(partition.participant))
            description = "coordinator cut from \(partition.participant) for \(partition.forSeconds) s, then healed"
        } else {
            return nil
        }
        // resolved: every global transaction begun before the fault is final (the coordinator logs it final only once
        // every branch call of its second phase succeeded)
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            let open = try? await coordinatorDatabase.withConnection(logger: logger) { connection -> Int64 in
                let rows = try await connection.query(
                    "SELECT count(*) FROM worker_events WHERE created_at <= \(faultTime) AND open", logger: logger
                )
                for try await count in rows.decode(Int64.self) { return count }
                return 0
            }
            if open == 0 { return Outcome(fault: description, faultAt: faultAt, resolvedAt: (ContinuousClock.now - runStart).inSeconds) }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return Outcome(fault: description, faultAt: faultAt, resolvedAt: nil)
    }
}
