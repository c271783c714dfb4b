import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// `dtx bench`: every scenario at every round-trip time, every mode, baseline and reference, interleaved per
/// repetition, with an invariant check after each run; writes results.json, report.md and report.html.
///
/// The parts: this loop; `CellRun` (one repetition of one cell); `FaultInjector` (crashes and partitions);
/// `BenchSummary` (pure: runs to cells); `Stack` (the processes, the relay); `Pgbench` (the reference rows).
public struct Bench: Sendable {
    public struct Options: Sendable {
        public var executable: String
        public var scenarios: [Scenario]
        public var modes: [BenchMode] = BenchMode.allCases
        /// Whether `--modes` was given: it then also narrows the scenarios that name their own modes.
        public var modesGiven = false
        public var clients: [Int] = [1, 4, 16, 64]
        /// Round-trip times between every two parts; [0] runs on loopback without a relay.
        public var rtts: [Duration] = [.zero]
        public var duration: Duration = .seconds(10)
        public var warmup: Duration = .seconds(2)
        public var repeats = 3
        public var rate: Double?
        /// `--batch-window` of the coordinator behind the `+batch` rows (nil: its default).
        public var batchWindow: Duration?
        public var outputDirectory: String
        /// Use these databases instead of three embedded servers.
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
        if options.modes.contains(where: \.isReference) && Pgbench.executable == nil {
            say("NOTE: pgbench is not on PATH: the reference rows pgbench-local and pgbench-2pc are skipped.")
        }

        var servers: ServerTrio?
        let urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL)
        if let given = options.databases {
            urls = given
        } else {
            let directory = "/tmp/dtx-bench-\(getpid())"
            let trio = try ServerTrio(directory: directory)
            try trio.removeWhenProcessExits()
            cleanup.add { try? trio.destroy() }
            say("==> Starting three throwaway PostgreSQL servers (coordinator, ServiceA, ServiceB) in \(directory)")
            try await trio.start(logger: logger)
            servers = trio
            urls = try trio.urls
        }
        defer { try? servers?.destroy() }

        var scenarioResults: [ScenarioResult] = []
        for scenario in options.scenarios {
            guard !modes(for: scenario).isEmpty else {
                say("")
                let own = scenario.modes.map { "its modes (\($0.joined(separator: ", ")))" } ?? "the modes"
                say("==> Scenario \(scenario.name) skipped: none of \(own) can run here (not in --modes, or pgbench missing)")
                continue
            }
            scenarioResults.append(try await runScenario(scenario, urls: urls, cleanup: cleanup))
        }
        let environment = try await Self.environment(database: urls.a, startedAt: startedAt, logger: logger)
        let results = BenchResults(
            environment: environment,
            settings: BenchSettings(
                rttMs: options.rtts.map(\.milliseconds), repeats: options.repeats, durationSeconds: options.duration.inSeconds,
                warmupSeconds: options.warmup.inSeconds, loop: options.rate == nil ? "closed" : "open", rate: options.rate,
                batchWindowMs: options.batchWindow?.milliseconds
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

    /// The modes a scenario runs: its own (those of them that an explicit `--modes` names too) or the command line's; a
    /// fault scenario runs the coordinator modes only.
    func modes(for scenario: Scenario) -> [BenchMode] {
        var modes = options.modes
        if let own = scenario.benchModes { modes = options.modesGiven ? own.filter(options.modes.contains) : own }
        if scenario.hasFault { modes = modes.filter { $0.protocolMode != nil } }
        if Pgbench.executable == nil { modes = modes.filter { !$0.isReference } }
        return modes
    }

    func rtts(for scenario: Scenario) throws -> [Duration] {
        guard let rtt = scenario.rtt else { return options.rtts }
        return try rtt.map { try Self.parseRTT($0) }
    }

    /// "5ms", "0.5ms", "0": a round-trip time.
    public static func parseRTT(_ text: String) throws -> Duration {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let number = trimmed.hasSuffix("ms") ? String(trimmed.dropLast(2)) : trimmed
        guard let value = Double(number), value >= 0, value <= 1000 else {
            throw ScenarioError("round-trip time '\(text)': give milliseconds from 0 to 1000, e.g. 0ms,1ms,5ms")
        }
        return .microseconds(Int64(value * 1000))
    }

    // MARK: One scenario

    func runScenario(_ scenario: Scenario, urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL), cleanup: CleanupList) async throws -> ScenarioResult {
        say("")
        say("==> Scenario \(scenario.name): \(scenario.description)")
        let modes = modes(for: scenario)
        let clientCounts = scenario.clients ?? options.clients
        var runs: [CellKey: [RunResult]] = [:]
        var recoveries: [RecoveryTimeline] = []
        for rtt in try rtts(for: scenario) {
            let stack = try await startStack(scenario, rtt: rtt, modes: modes, urls: urls, cleanup: cleanup)
            do {
                // after the services have applied the schema; again at each RTT (stock and initial stock move together)
                try await Seeder.seed(scenario.workload, serviceA: urls.a, serviceB: urls.b, logger: logger)
            } catch {
                await stack.stop()
                throw error
            }
            let client = ServiceClient()
            let loadDatabase = PostgresClient(configuration: try await stack.loadDatabase().clientConfiguration(maximumConnections: 80), backgroundLogger: logger)
            let loadDatabaseTask = Task { await loadDatabase.run() }
            let verifier = Verifier(
                coordinator: urls.coordinator,
                participants: [.init(name: "ServiceA", database: urls.a), .init(name: "ServiceB", database: urls.b)],
                logger: logger
            )
            let cell = CellRun(
                scenario: scenario, stack: stack, client: client, loadDatabase: loadDatabase, verifier: verifier,
                postgresServers: Self.postgresServers(urls), rttMs: rtt.milliseconds,
                outputDirectory: options.outputDirectory, say: say, logger: logger
            )
            do {
                for repetition in 1...options.repeats {
                    for clients in clientCounts {
                        for mode in modes {
                            var plan = LoadPlan()
                            plan.clients = clients
                            plan.duration = options.duration
                            plan.warmup = options.warmup
                            plan.rate = options.rate
                            let (run, timeline) = try await cell.run(mode, clients: clients, plan: plan, repetition: repetition, of: options.repeats)
                            runs[CellKey(mode: mode, clients: clients, rttMs: rtt.milliseconds), default: []].append(run)
                            if let timeline { recoveries.append(timeline) }
                        }
                    }
                }
            } catch {
                loadDatabaseTask.cancel()
                await stack.stop()
                throw error
            }
            loadDatabaseTask.cancel()
            try? await client.shutdown()
            await stack.stop()
        }
        return ScenarioResult(
            name: scenario.name, description: scenario.description, parameters: scenario.parameters,
            cells: BenchSummary.cells(runs), recoveries: recoveries
        )
    }

    func startStack(_ scenario: Scenario, rtt: Duration, modes: [BenchMode], urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL), cleanup: CleanupList) async throws -> Stack {
        let folder = rtt > .zero ? "\(scenario.name)-rtt-\(ReportFormat.rtt(rtt.milliseconds))" : scenario.name
        var configuration = Stack.Configuration(
            executable: options.executable, logDirectory: "\(options.outputDirectory)/logs/\(folder)",
            serviceA: urls.a, serviceB: urls.b, coordinatorDatabase: urls.coordinator
        )
        var participantArguments = scenario.participantArguments ?? [:]
        // The reconciler asks a coordinator about each branch left in try for longer than --stale-after. The `direct`
        // baseline leaves its rows in try on purpose until its cell ends (no coordinator will ever decide them), so
        // with a short --stale-after the reconcilers would ask about every one of them while `direct` is measured,
        // slowing the baseline down (and flattering every ratio to it). Only the fault scenarios need a reconciler
        // that acts within seconds; elsewhere a branch is stale only after the longest cell.
        let staleAfter = scenario.hasFault ? 5 : Int((options.warmup + options.duration).inSeconds.rounded(.up)) + 60
        for name in Stack.participantNames {
            participantArguments[name, default: []] += [
                "--reconcile-interval", "2s", "--stale-after", "\(staleAfter)s", "--max-connections", "64",
            ]
        }
        configuration.participantArguments = participantArguments
        configuration.coordinatorArguments = (scenario.coordinatorArguments ?? []) + ["--max-connections", "64"]
        configuration.unbatchedCoordinator = modes.contains { $0.protocolMode != nil && !$0.batched }
        configuration.batchWindow = options.batchWindow
        // no relay at 0 ms, unless a partition needs one (it then adds no delay)
        configuration.rtt = rtt > .zero || scenario.partition != nil ? rtt : nil
        let stack = Stack(configuration: configuration)
        cleanup.add { stack.terminateNow() }
        if rtt > .zero { say("    round-trip time \(ReportFormat.rtt(rtt.milliseconds)) between every two parts (dtx relay)") }
        try await stack.start()
        return stack
    }

    /// The postmaster of an embedded server on this machine, found by its data folder's port setting.
    /// The PostgreSQL servers on this machine whose CPU the bench counts, each by its CPU column: one per part
    /// (`postgres-coordinator`, `postgres-ServiceA`, `postgres-ServiceB`) when each part has its own server, as the
    /// throwaway servers do, so that the coordinator's log is told apart from the participants' work; one `postgres` for
    /// them all when parts share a server.
    static func postgresServers(_ urls: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL)) -> [(column: String, pid: pid_t)] {
        let parts = [("coordinator", urls.coordinator), ("ServiceA", urls.a), ("ServiceB", urls.b)]
        let found = parts.compactMap { name, url in postmasterPID(url).map { (column: "postgres-" + name, pid: $0) } }
        let pids = found.map(\.pid).uniqued()
        if pids.count == found.count { return found }
        return pids.map { (column: "postgres", pid: $0) }
    }

    static func postmasterPID(_ url: DatabaseURL) -> pid_t? {
        guard case .tcp(let host, let port) = url.endpoint, host == "127.0.0.1" else { return nil }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = pid_t(entry), let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.first?.hasSuffix("/postgres") == true, let dataIndex = arguments.firstIndex(of: "-D"), dataIndex + 1 < arguments.count else { continue }
            let conf = arguments[dataIndex + 1] + "/dtx.conf"
            if let text = try? String(contentsOfFile: conf, encoding: .utf8), text.contains("port = \(port)\n") { return pid }
        }
        return nil
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

extension Duration {
    /// This duration in milliseconds, with fractions.
    var milliseconds: Double { inSeconds * 1000 }
}

extension Array where Element: Hashable {
    /// The elements in order, each once.
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
