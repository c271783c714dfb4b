import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// One repetition of one cell: the load (or pgbench), the fault if the scenario has one, then the wait for quiet, the
/// invariant check and the CPU each process used.
struct CellRun: Sendable {
    let scenario: Scenario
    let stack: Stack
    let client: ServiceClient
    /// ServiceA's database as the load generator reaches it (through the relay when there is one), for `local`.
    let loadDatabase: PostgresClient
    let verifier: Verifier
    /// The postmasters of the servers, by CPU column (`Bench.postgresServers`).
    let postgresServers: [(column: String, pid: pid_t)]
    let rttMs: Double
    let outputDirectory: String
    let say: @Sendable (String) -> Void
    let logger: Logger

    func run(_ mode: BenchMode, clients: Int, plan: LoadPlan, repetition: Int, of repeats: Int) async throws -> (RunResult, RecoveryTimeline?) {
        let rtt = rttMs > 0 ? ", \(ReportFormat.rtt(rttMs)) RTT" : ""
        let label = "\(scenario.name) \(mode.rawValue) \(clients) clients\(rtt), run \(repetition)/\(repeats)"
        let cpuBefore = await cpu()
        let retriesBefore = await retries()
        let start = ContinuousClock.now
        // CPU is counted over the measured window only, as throughput is: not the warm-up, nor the settling, waiting
        // and invariant check after it (whose full-table reads grow with every cell and would be charged to the mode)
        let measureFrom = start + plan.warmup
        let measureUntil = measureFrom + plan.duration
        let cpuWindow = Task { [self] () -> (from: [String: Double], until: [String: Double])? in
            guard plan.count == nil else { return nil }
            try? await Task.sleep(until: measureFrom)
            let from = await cpu()
            try? await Task.sleep(until: measureUntil)
            guard ContinuousClock.now < measureUntil + .seconds(1) else { return nil }  // overslept: no clean window
            return (from, await cpu())
        }
        let say = self.say
        let fault = FaultInjector(scenario: scenario, stack: stack, coordinatorDatabase: verifier.coordinator, logger: logger)
            .start(for: mode, runStart: start, warmup: plan.warmup)
        let result: LoadResult
        var ownCPU = 0.0
        if mode.isReference {
            (result, ownCPU) = try await Pgbench.run(
                mode, database: await stack.loadDatabase(), clients: clients, plan: plan, workload: scenario.workload,
                directory: "\(outputDirectory)/pgbench"
            )
        } else {
            let generator = LoadGenerator(client: client, workload: scenario.workload) { done in
                say("    \(label): \(String(format: "%.0f", (ContinuousClock.now - start).inSeconds)) s, \(done) transactions")
            }
            result = await generator.run(try await target(mode), plan: plan)
        }
        let faultOutcome = await fault?.value
        let window = await cpuWindow.value
        if mode == .direct { try await settleDirectRows() }
        _ = await waitForQuiet(timeout: .seconds(120))
        let violations = try await verifier.check()
        var cpuUsed: [String: Double] = [:]
        let (from, until): ([String: Double], [String: Double])
        if let window { (from, until) = window } else { (from, until) = (cpuBefore, await cpu()) }
        for (name, value) in until {
            // totals only grow: a process killed and restarted (crash scenarios) counts its ended life too (Stack.kill).
            // Before, the new life's total was taken whole, or less the old life's, whichever the comparison picked.
            cpuUsed[name] = max(0, value - (from[name] ?? 0))
        }
        // pgbench is a child process, whose CPU is known only once it exits: its share of the measured window
        if mode.isReference {
            let share = window == nil ? 1 : plan.duration.inSeconds / (plan.warmup + plan.duration).inSeconds
            cpuUsed["loadgen", default: 0] += ownCPU * share
        }
        let retriesAfter = await retries()
        let run = RunResult(
            repetition: repetition, durationSeconds: result.measuredSeconds, transactions: result.transactions,
            throughput: result.throughput, latencyMs: result.percentiles, outcomes: result.outcomes,
            retries: retriesAfter >= retriesBefore ? retriesAfter - retriesBefore : retriesAfter, cpuSeconds: cpuUsed,
            invariantsHeld: violations.isEmpty, violations: violations.prefix(50).map(\.description)
        )
        say(String(format: "    %@: %.0f tx/s, p50 %.1f ms, p99 %.1f ms, invariants %@",
                   label, run.throughput, run.latencyMs.p50, run.latencyMs.p99, violations.isEmpty ? "hold" : "VIOLATED (\(violations.count))"))
        let timeline = faultOutcome.map { outcome in
            RecoveryTimeline(
                mode: mode, rttMs: rttMs, repetition: repetition, fault: outcome.fault, faultAtSeconds: outcome.faultAt, resolvedAtSeconds: outcome.resolvedAt,
                recoverySeconds: outcome.resolvedAt.map { $0 - outcome.faultAt },
                throughputSamples: result.samples.map { Double($0) / result.sampleSeconds }, sampleSeconds: result.sampleSeconds,
                invariantsHeld: violations.isEmpty
            )
        }
        return (run, timeline)
    }

    func target(_ mode: BenchMode) async throws -> LoadTarget {
        switch mode {
        case .local:
            return .local(loadDatabase)
        case .direct:
            return .direct(serviceA: await stack.loadURL("ServiceA"), serviceB: await stack.loadURL("ServiceB"))
        default:
            guard let protocolMode = mode.protocolMode else { throw ScenarioError("\(mode.rawValue) is not run by the load generator") }
            let coordinator = mode.batched ? Stack.coordinatorName : Stack.unbatchedCoordinatorName
            return .coordinator(url: await stack.loadURL(coordinator), mode: protocolMode)
        }
    }

    /// `direct` reserves and never confirms (no coordinator): its rows would stay in `try`, and the participants'
    /// reconcilers would ask the coordinator about them every run, loading it during the other modes' runs. The stock
    /// they took is taken for good (no atomicity), so they are marked `confirm`, which is what they are.
    func settleDirectRows() async throws {
        for participant in verifier.participants {
            _ = try await participant.database.withConnection(logger: logger) { connection in
                try await connection.query(
                    "UPDATE transactions SET status = 'confirm' WHERE status = 'try' AND worker_event_id >= \(Verifier.baselineIDs)",
                    logger: logger
                )
            }
        }
    }

    /// Waits until nothing is open anywhere (the log's `open` rows, the participants' `open_branches`); false on timeout.
    func waitForQuiet(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let open = try? await openWork(), open == 0 { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    func openWork() async throws -> Int64 {
        var open = try await count(verifier.coordinator, "SELECT count(*) FROM worker_events WHERE open")
        for participant in verifier.participants {
            open += try await count(participant.database, "SELECT count(*) FROM open_branches")
        }
        return open
    }

    func count(_ url: DatabaseURL, _ query: PostgresQuery) async throws -> Int64 {
        try await url.withConnection(logger: logger) { connection in
            for try await value in try await connection.query(query, logger: logger).decode(Int64.self) { return value }
            return 0
        }
    }

    /// Branch retries so far, from both coordinators' metrics.
    func retries() async -> Int {
        var total = 0.0
        for name in await stack.serviceNames where name.hasPrefix(Stack.coordinatorName) {
            guard let reply = try? await client.get(await stack.url(name) + "/metrics", timeout: .seconds(5)) else { continue }
            for line in String(decoding: reply.body, as: UTF8.self).split(separator: "\n") where line.hasPrefix("dtx_branch_retries_total") {
                total += Double(line.split(separator: " ").last ?? "0") ?? 0
            }
        }
        return Int(total)
    }

    /// CPU seconds so far per process: the services and the relay, PostgreSQL (each server's postmaster and backends),
    /// this load generator.
    func cpu() async -> [String: Double] {
        var result = await stack.cpuSeconds()
        for server in postgresServers {
            if let seconds = ProcessCPU.treeSeconds(root: server.pid) { result[server.column, default: 0] += seconds }
        }
        if let own = ProcessCPU.seconds(pid: getpid(), includeChildren: false) { result["loadgen"] = own }
        return result
    }
}
