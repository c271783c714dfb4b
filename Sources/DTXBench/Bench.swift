import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// `dtx bench`: every scenario, every mode and both baselines, interleaved per repetition, with an invariant check
/// after each run; writes results.json, report.md and report.html.
public struct Bench: Sendable {
    public struct Options: Sendable {
        public var executable: String
        public var scenarios: [Scenario]
        public var modes: [String] = ["local", "direct", "tcc", "saga", "xa"]
        public var clients: [Int] = [1, 4, 16, 64]
        public var duration: Duration = .seconds(10)
        public var warmup: Duration = .seconds(2)
        public var repeats = 3
        public var rate: Double?
        public var outputDirectory: String
        /// Use these databases instead of the embedded cluster.
        public var databases: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL)?

        public init(executable: String, scenarios: [Scenario], outputDirectory: String) {
            self.executable = executable
            self.scenarios = scenarios
            self.outputDirectory = outputDirectory
        }
    }

    let options: Options
    let say: @Sendable (String) -> Void
    let logger: Logger

    public init(options: Options, say: @escaping @Sendable (String) -> Void, logger: Logger) {
        self.options = options
        self.say = say
        self.logger = logger
    }

    public func run(cleanup: CleanupList) async throws -> BenchResults {
        let startedAt = ISO8601DateFormatter().string(from: Date())
        try FileManager.default.createDirectory(atPath: options.outputDirectory, withIntermediateDirectories: true)
        #if DEBUG
        say("WARNING: this is a debug build: the numbers mean little. Build with `swift build -c release` and run .build/release/dtx bench.")
        #endif

        var cluster: EmbeddedPostgres?
        let urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL)
        if let given = options.databases {
            urls = given
        } else {
            let directory = "/tmp/dtx-bench-\(getpid())"
            let embedded = try EmbeddedPostgres(configuration: .init(directory: directory))
            try embedded.removeWhenProcessExits()
            cleanup.add { try? embedded.destroy() }
            say("==> Starting a throwaway PostgreSQL in \(directory)")
            try await embedded.start(logger: logger)
            cluster = embedded
            urls = (try embedded.url(database: "dtx_service_a"), try embedded.url(database: "dtx_service_b"), try embedded.url(database: "dtx_coordinator"))
        }
        defer { if let cluster { try? cluster.destroy() } }

        var scenarioResults: [ScenarioResult] = []
        for scenario in options.scenarios {
            scenarioResults.append(try await runScenario(scenario, urls: urls, cleanup: cleanup))
        }
        let environment = try await Self.environment(database: urls.a, startedAt: startedAt, logger: logger)
        let results = BenchResults(
            environment: environment,
            settings: BenchSettings(
                repeats: options.repeats, durationSeconds: options.duration.inSeconds, warmupSeconds: options.warmup.inSeconds,
                loop: options.rate == nil ? "closed" : "open", rate: options.rate
            ),
            scenarios: scenarioResults
        )
        try Self.write(results, to: options.outputDirectory)
        return results
    }

    /// Writes results.json, report.md and report.html into `directory`.
    public static func write(_ results: BenchResults, to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(results).write(to: URL(fileURLWithPath: "\(directory)/results.json"))
        try ReportRenderer.markdown(results).write(toFile: "\(directory)/report.md", atomically: true, encoding: .utf8)
        try ReportRenderer.html(results).write(toFile: "\(directory)/report.html", atomically: true, encoding: .utf8)
    }

    // MARK: One scenario

    func runScenario(_ scenario: Scenario, urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL), cleanup: CleanupList) async throws -> ScenarioResult {
        say("")
        say("==> Scenario \(scenario.name): \(scenario.description)")
        var configuration = Stack.Configuration(
            executable: options.executable, logDirectory: "\(options.outputDirectory)/logs/\(scenario.name)",
            serviceA: urls.a, serviceB: urls.b, coordinatorDatabase: urls.coordinator
        )
        var participantArguments = scenario.participantArguments ?? [:]
        for name in Stack.participantNames {
            participantArguments[name, default: []] += ["--reconcile-interval", "2s", "--stale-after", "5s", "--max-connections", "64"]
        }
        configuration.participantArguments = participantArguments
        configuration.coordinatorArguments = (scenario.coordinatorArguments ?? []) + ["--max-connections", "64"]
        let stack = Stack(configuration: configuration)
        cleanup.add { stack.terminateNow() }
        try await stack.start()
        let client = ServiceClient()
        let postgres = PostgresClient(configuration: try urls.a.clientConfiguration(maximumConnections: 80), backgroundLogger: logger)
        let postgresTask = Task { await postgres.run() }
        defer {
            postgresTask.cancel()
            Task { try? await client.shutdown() }
        }

        try await Seeder.seed(scenario.workload, serviceA: urls.a, serviceB: urls.b, logger: logger)
        let modes = (scenario.modes ?? options.modes).filter { scenario.crash == nil || ($0 != "local" && $0 != "direct") }
        let clientCounts = scenario.clients ?? options.clients
        let verifier = Verifier(
            coordinator: urls.coordinator,
            participants: [.init(name: "ServiceA", database: urls.a), .init(name: "ServiceB", database: urls.b)],
            logger: logger
        )
        let postmaster = postmasterPID(urls.a)
        var runs: [String: [RunResult]] = [:]
        var recoveries: [RecoveryTimeline] = []

        for repetition in 1...options.repeats {
            for clients in clientCounts {
                for mode in modes {
                    let target = try await self.target(mode, stack: stack, postgres: postgres)
                    let cpuBefore = await cpu(stack, postmaster: postmaster)
                    let retriesBefore = await retriesSoFar(client, stack)
                    var plan = LoadPlan()
                    plan.clients = clients
                    plan.duration = options.duration
                    plan.warmup = options.warmup
                    plan.rate = options.rate
                    let label = "\(scenario.name) \(mode) \(clients) clients, run \(repetition)/\(options.repeats)"
                    let say = self.say
                    let progressStart = ContinuousClock.now
                    let generator = LoadGenerator(client: client, workload: scenario.workload) { done in
                        let elapsed = ContinuousClock.now - progressStart
                        say("    \(label): \(String(format: "%.0f", elapsed.inSeconds)) s, \(done) transactions")
                    }
                    let coordinatorDatabase = urls.coordinator
                    let crashTask = scenario.crash.map { crash in
                        Task { () -> (faultAt: Double, resolvedAt: Double?) in
                            try? await Task.sleep(for: options.warmup + .milliseconds(Int64(crash.atSeconds * 1000)))
                            let faultTime = Date()
                            let at = (ContinuousClock.now - progressStart).inSeconds
                            await stack.kill(crash.target)
                            try? await Task.sleep(for: .milliseconds(Int64(crash.downSeconds * 1000)))
                            try? await stack.startService(crash.target)
                            // resolved: every global transaction begun before the fault has its final outcome (the
                            // coordinator logs it final only once every branch call of its second phase succeeded)
                            let deadline = ContinuousClock.now + .seconds(120)
                            while ContinuousClock.now < deadline {
                                let open = try? await self.count(
                                    coordinatorDatabase,
                                    """
                                    SELECT count(*) FROM worker_events WHERE created_at <= \(faultTime)
                                    AND open
                                    """
                                )
                                if open == 0 { return (at, (ContinuousClock.now - progressStart).inSeconds) }
                                try? await Task.sleep(for: .milliseconds(100))
                            }
                            return (at, nil)
                        }
                    }
                    let result = await generator.run(target, plan: plan)
                    let crashOutcome = await crashTask?.value
                    if mode == "direct" { try await settleDirectRows(urls: urls) }
                    _ = await waitForQuiet(verifier, timeout: .seconds(120))
                    let violations = try await verifier.check()
                    let cpuAfter = await cpu(stack, postmaster: postmaster)
                    var cpuUsed: [String: Double] = [:]
                    // a process restarted during the run (crash scenarios) starts from zero: count its new life only
                    for (name, value) in cpuAfter { cpuUsed[name] = value >= (cpuBefore[name] ?? 0) ? value - (cpuBefore[name] ?? 0) : value }
                    // a restarted coordinator starts its counters from zero
                    let retriesAfter = await retriesSoFar(client, stack)
                    let retries = retriesAfter >= retriesBefore ? retriesAfter - retriesBefore : retriesAfter
                    let run = RunResult(
                        repetition: repetition, durationSeconds: result.measuredSeconds, transactions: result.transactions,
                        throughput: result.throughput, latencyMs: result.percentiles, outcomes: result.outcomes,
                        retries: retries, cpuSeconds: cpuUsed, invariantsHeld: violations.isEmpty,
                        violations: violations.prefix(50).map(\.description)
                    )
                    runs["\(mode)/\(clients)", default: []].append(run)
                    say(String(format: "    %@: %.0f tx/s, p50 %.1f ms, p99 %.1f ms, invariants %@",
                               label, run.throughput, run.latencyMs.p50, run.latencyMs.p99, violations.isEmpty ? "hold" : "VIOLATED (\(violations.count))"))
                    if let crash = scenario.crash, let crashOutcome {
                        recoveries.append(RecoveryTimeline(
                            mode: mode, fault: "\(crash.target) killed (SIGKILL), restarted after \(crash.downSeconds) s",
                            faultAtSeconds: crashOutcome.faultAt, resolvedAtSeconds: crashOutcome.resolvedAt,
                            recoverySeconds: crashOutcome.resolvedAt.map { $0 - crashOutcome.faultAt },
                            throughputSamples: result.samples.map { Double($0) / result.sampleSeconds }, sampleSeconds: result.sampleSeconds,
                            invariantsHeld: violations.isEmpty
                        ))
                    }
                }
            }
        }
        await stack.stop()
        return ScenarioResult(
            name: scenario.name, description: scenario.description, parameters: scenario.parameters,
            cells: Self.summarize(runs, modes: modes, clients: clientCounts), recoveries: recoveries
        )
    }

    /// `direct` reserves and never confirms (no coordinator): its rows would stay in `try`, and the participants'
    /// reconcilers would ask the coordinator about them every run, loading it during the other modes' runs. The
    /// stock they took is taken for good (no atomicity), so they are marked `confirm`, which is what they are.
    func settleDirectRows(urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL)) async throws {
        for url in [urls.a, urls.b] {
            try await url.withConnection(logger: logger) { connection in
                try await connection.query(
                    "UPDATE transactions SET status = 'confirm' WHERE status = 'try' AND worker_event_id >= \(Verifier.baselineIDs)",
                    logger: logger
                )
            }
        }
    }

    func target(_ mode: String, stack: Stack, postgres: PostgresClient) async throws -> LoadTarget {
        switch mode {
        case "local": return .local(postgres)
        case "direct": return .direct(serviceA: await stack.url("ServiceA"), serviceB: await stack.url("ServiceB"))
        default:
            guard let parsed = Mode(rawValue: mode) else { throw ScenarioError("unknown mode '\(mode)': use local, direct, tcc, saga, xa") }
            return .coordinator(url: await stack.coordinatorURL, mode: parsed)
        }
    }

    /// Waits until no transaction is open anywhere; false on timeout.
    func waitForQuiet(_ verifier: Verifier, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let open = try? await openWork(verifier), open == 0 { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    func openWork(_ verifier: Verifier) async throws -> Int64 {
        var open: Int64 = 0
        open += try await count(verifier.coordinator, "SELECT count(*) FROM worker_events WHERE open")
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

    /// Branch retries so far, from the coordinator's metrics.
    func retriesSoFar(_ client: ServiceClient, _ stack: Stack) async -> Int {
        guard let reply = try? await client.get(await stack.coordinatorURL + "/metrics", timeout: .seconds(5)) else { return 0 }
        let text = String(decoding: reply.body, as: UTF8.self)
        var total = 0.0
        for line in text.split(separator: "\n") where line.hasPrefix("dtx_branch_retries_total") {
            total += Double(line.split(separator: " ").last ?? "0") ?? 0
        }
        return Int(total)
    }

    /// CPU seconds so far per process: the services, PostgreSQL (postmaster and backends), this load generator.
    func cpu(_ stack: Stack, postmaster: pid_t?) async -> [String: Double] {
        var result = await stack.cpuSeconds()
        if let postmaster, let seconds = ProcessCPU.treeSeconds(root: postmaster) { result["postgres"] = seconds }
        if let own = ProcessCPU.seconds(pid: getpid(), includeChildren: false) { result["loadgen"] = own }
        return result
    }

    func postmasterPID(_ url: DatabaseURL) -> pid_t? {
        // only for the embedded cluster on this machine: find the postmaster by its data folder
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        guard case .tcp(let host, let port) = url.endpoint, host == "127.0.0.1" else { return nil }
        for entry in entries {
            guard let pid = pid_t(entry), let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.first?.hasSuffix("/postgres") == true, arguments.contains("-D") else { continue }
            if let dataIndex = arguments.firstIndex(of: "-D"), dataIndex + 1 < arguments.count {
                let conf = arguments[dataIndex + 1] + "/dtx.conf"
                if let text = try? String(contentsOfFile: conf, encoding: .utf8), text.contains("port = \(port)\n") { return pid }
            }
        }
        return nil
    }

    // MARK: Summaries

    static func summarize(_ runs: [String: [RunResult]], modes: [String], clients: [Int]) -> [CellResult] {
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        var cells: [CellResult] = []
        for clientCount in clients {
            let localMedian = median(runs["local/\(clientCount)"]?.map(\.throughput) ?? [])
            let directMedian = median(runs["direct/\(clientCount)"]?.map(\.throughput) ?? [])
            for mode in modes {
                guard let cellRuns = runs["\(mode)/\(clientCount)"], !cellRuns.isEmpty else { continue }
                let throughputs = cellRuns.map(\.throughput)
                let medianThroughput = median(throughputs)
                var cpuPer1000: [String: Double] = [:]
                let processes = Set(cellRuns.flatMap { $0.cpuSeconds.keys })
                for process in processes {
                    cpuPer1000[process] = median(cellRuns.map { run in
                        run.transactions > 0 ? (run.cpuSeconds[process] ?? 0) / Double(run.transactions) * 1000 : 0
                    })
                }
                let outcomes = Outcomes(
                    completed: Int(median(cellRuns.map { Double($0.outcomes.completed) })),
                    failed: Int(median(cellRuns.map { Double($0.outcomes.failed) })),
                    compensated: Int(median(cellRuns.map { Double($0.outcomes.compensated) })),
                    pending: Int(median(cellRuns.map { Double($0.outcomes.pending) })),
                    errors: Int(median(cellRuns.map { Double($0.outcomes.errors) }))
                )
                let summary = CellSummary(
                    throughput: Spread(median: medianThroughput, min: throughputs.min() ?? 0, max: throughputs.max() ?? 0),
                    latencyMs: Percentiles(
                        p50: median(cellRuns.map(\.latencyMs.p50)), p90: median(cellRuns.map(\.latencyMs.p90)),
                        p99: median(cellRuns.map(\.latencyMs.p99)), p999: median(cellRuns.map(\.latencyMs.p999)),
                        max: median(cellRuns.map(\.latencyMs.max))
                    ),
                    outcomes: outcomes,
                    retries: Int(median(cellRuns.map { Double($0.retries) })),
                    cpuSecondsPer1000: cpuPer1000,
                    ratioToLocal: localMedian > 0 ? medianThroughput / localMedian : nil,
                    ratioToDirect: directMedian > 0 ? medianThroughput / directMedian : nil,
                    invariantsHeld: cellRuns.allSatisfy(\.invariantsHeld)
                )
                cells.append(CellResult(mode: mode, clients: clientCount, runs: cellRuns, summary: summary))
            }
        }
        return cells
    }

    // MARK: Environment

    static func environment(database: DatabaseURL, startedAt: String, logger: Logger) async throws -> BenchEnvironment {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }.map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let memKB = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal") }.flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        let osRelease = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let os = osRelease.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }.map { $0.dropFirst(12).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) } ?? "unknown"
        var settings: [String: String] = [:]
        var version = "unknown"
        try await database.withConnection(logger: logger) { connection in
            for try await value in try await connection.query("SHOW server_version", logger: logger).decode(String.self) { version = value }
            let names = ["fsync", "synchronous_commit", "shared_buffers", "max_connections", "max_prepared_transactions", "wal_level"]
            for try await (name, value) in try await connection.query("SELECT name, setting FROM pg_settings WHERE name = ANY(\(names))", logger: logger)
                .decode((String, String).self)
            {
                settings[name] = value
            }
        }
        let commit = (try? Command.run(["git", "rev-parse", "--short", "HEAD"]))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        return BenchEnvironment(
            cpuModel: model, cores: ProcessInfo.processInfo.activeProcessorCount, memoryGiB: (memKB / 1024 / 1024 * 10).rounded() / 10,
            os: os, postgresVersion: version, postgresSettings: settings, gitCommit: commit.isEmpty ? "unknown" : commit,
            buildConfiguration: build, startedAt: startedAt, finishedAt: ISO8601DateFormatter().string(from: Date())
        )
    }
}

