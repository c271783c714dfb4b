import ArgumentParser
import DTXBench
import DTXPostgres
import Foundation
import Glibc
import Logging

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark TCC, Saga and XA against the local and direct baselines on one stock workload, and write the reports."
    )

    @Option(name: .customLong("scenario"), help: "A scenario file (repeat); default: every file in benchmarks/scenarios/.")
    var scenarioFiles: [String] = []
    @Option(help: "Modes, baselines and references, comma-separated (default all: \(BenchMode.allCases.map(\.rawValue).joined(separator: ","))); also narrows scenarios that name their own.")
    var modes: String?
    @Option(help: "Client counts, comma-separated.") var clients: String = "1,4,16,64"
    @Option(help: "Round-trip times between every two parts, comma-separated, e.g. 0ms,1ms,5ms (0: loopback, no relay).")
    var rtt: String = "0ms"
    @Option(help: "Measured time per run.") var duration = DurationArgument(.seconds(10))
    @Option(help: "Warm-up per run (not measured).") var warmup = DurationArgument(.seconds(2))
    @Option(name: .customLong("repeat"), help: "Repetitions per cell (reported as median with min-max).") var repeats: Int = 3
    @Option(help: "Open loop at this many requests per second (default: closed loop).") var rate: Double?
    @Option(help: "The +batch rows' coordinator --batch-window (default: the coordinator's default).") var batchWindow: DurationArgument?
    @Option(help: "Where results.json, report.md and report.html go.") var out: String = "bench-out"
    @Option(help: "ServiceA's database (default: a throwaway embedded cluster).") var databaseUrlA: String?
    @Option(help: "ServiceB's database.") var databaseUrlB: String?
    @Option(help: "The coordinator's database.") var databaseUrlCoordinator: String?

    func run() async throws {
        var logger = Logger(label: "dtx.bench")
        logger.logLevel = .warning
        let files = scenarioFiles.isEmpty ? try defaultScenarioFiles() : scenarioFiles
        var options = Bench.Options(executable: selfExecutable(), scenarios: try files.map(Scenario.load), outputDirectory: out)
        do {
            if let modes {
                options.modes = try BenchMode.list(modes)
                options.modesGiven = true
            }
            options.rtts = try rtt.split(separator: ",").map { try Bench.parseRTT(String($0)) }
        } catch let error as ScenarioError {
            throw ValidationError(error.description)
        }
        guard !options.modes.isEmpty, !options.rtts.isEmpty else { throw ValidationError("give at least one mode and one round-trip time") }
        options.clients = try clients.split(separator: ",").map {
            guard let n = Int($0.trimmingCharacters(in: .whitespaces)), (1...Self.maxClients).contains(n) else {
                throw ValidationError("--clients: '\($0)' is not a whole number from 1 to \(Self.maxClients)")
            }
            return n
        }
        options.duration = duration.duration
        options.warmup = warmup.duration
        guard repeats >= 1 else { throw ValidationError("--repeat must be at least 1") }
        options.repeats = repeats
        if let rate, !(rate.isFinite && Self.rates.contains(rate)) {
            throw ValidationError("--rate must be requests per second from \(Self.rates.lowerBound) to \(Int(Self.rates.upperBound)), e.g. --rate 500")
        }
        options.rate = rate
        options.batchWindow = batchWindow?.duration
        if let window = batchWindow?.duration, window <= .zero || window > .seconds(1) {
            throw ValidationError("--batch-window must be above 0 and at most 1s (the canonical rows run unbatched already)")
        }
        if let a = databaseUrlA, let b = databaseUrlB, let c = databaseUrlCoordinator {
            options.databases = (try DatabaseURL(a), try DatabaseURL(b), try DatabaseURL(c))
        } else if databaseUrlA != nil || databaseUrlB != nil || databaseUrlCoordinator != nil {
            throw ValidationError("give all three of --database-url-a, --database-url-b and --database-url-coordinator, or none")
        }
        let cleanup = CleanupList()
        let interrupt = onInterrupt {
            FileHandle.standardError.write(Data("\ninterrupted: stopping the services and removing the cluster\n".utf8))
            cleanup.runAll()
            Glibc.exit(130)
        }
        defer { interrupt.cancel() }
        let results = try await Bench(options: options, say: { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) }, logger: logger)
            .run(cleanup: cleanup)
        print("")
        print("wrote \(out)/results.json, \(out)/report.md, \(out)/report.html")
        let violated = results.scenarios.flatMap(\.cells).filter { !$0.summary.invariantsHeld }
        if !violated.isEmpty {
            print("INVARIANTS VIOLATED in \(violated.count) cells: see the report")
            throw ExitCode(1)
        }
    }

    /// Open-loop rates the bench takes: below 0.1/s a run of minutes sends nothing; above, no client keeps up.
    static let rates: ClosedRange<Double> = 0.1...1_000_000
    /// Clients per run: each is a task with its connection; thousands would measure the load generator.
    static let maxClients = 4096

    func defaultScenarioFiles() throws -> [String] {
        let folder = "benchmarks/scenarios"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
            throw ValidationError("no --scenario given and no \(folder)/ here: run from the repository root or pass --scenario FILE")
        }
        return names.filter { $0.hasSuffix(".json") }.sorted().map { "\(folder)/\($0)" }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Render report.md and report.html again from DIR/results.json.")
    @Argument(help: "The folder that holds results.json.") var directory: String

    func run() throws {
        guard let data = FileManager.default.contents(atPath: "\(directory)/results.json") else {
            throw ValidationError("no \(directory)/results.json: give the folder a dtx bench run wrote")
        }
        let results: BenchResults
        do {
            results = try JSONDecoder().decode(BenchResults.self, from: data)
        } catch {
            throw ValidationError("\(directory)/results.json is not the results of a dtx bench run (of this version): \(error)")
        }
        try Bench.write(results, to: directory)
        print("wrote \(directory)/report.md and \(directory)/report.html")
    }
}

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the invariants across the coordinator's and the participants' databases (run when the system is quiet)."
    )
    @Option(help: "The coordinator's database.") var coordinatorDatabase: String?
    @Option(name: .customLong("participant"), help: "NAME=DATABASE_URL of a participant (repeat).") var participants: [String] = []
    @Option(help: "Or: an embedded cluster's folder (dtx postgres start), with the default databases.") var dir: String = ".dtx/postgres"

    func run() async throws {
        var logger = Logger(label: "dtx.verify")
        logger.logLevel = .warning
        let verifier: Verifier
        if coordinatorDatabase == nil, !participants.isEmpty {
            throw ValidationError("--participant needs --coordinator-database (the log the branches are checked against)")
        }
        if let coordinatorDatabase {
            let parsed = try participants.map { spec -> Verifier.Participant in
                let parts = spec.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { throw ValidationError("--participant '\(spec)': give NAME=DATABASE_URL") }
                return .init(name: String(parts[0]), database: try DatabaseURL(String(parts[1])))
            }
            guard !parsed.isEmpty else { throw ValidationError("give at least one --participant NAME=DATABASE_URL") }
            verifier = Verifier(coordinator: try DatabaseURL(coordinatorDatabase), participants: parsed, logger: logger)
        } else if ServerTrio.holdsServers(in: dir) {
            // a server per part (dtx postgres start --servers 3)
            let trio = try ServerTrio(directory: dir)
            guard trio.clusters.values.allSatisfy({ $0.isRunning() }) else {
                throw ValidationError("the servers in \(dir) are not all running: start them (dtx postgres start --dir \(dir))")
            }
            verifier = Verifier(
                coordinator: try trio.url(.coordinator),
                participants: [.init(name: "ServiceA", database: try trio.url(.serviceA)), .init(name: "ServiceB", database: try trio.url(.serviceB))],
                logger: logger
            )
        } else {
            let cluster = try EmbeddedPostgres(configuration: .init(directory: dir))
            guard cluster.isRunning() else {
                throw ValidationError("no running cluster in \(dir): give --coordinator-database and --participant NAME=URL, or start it")
            }
            verifier = Verifier(
                coordinator: try cluster.url(database: "dtx_coordinator"),
                participants: [.init(name: "ServiceA", database: try cluster.url(database: "dtx_service_a")),
                               .init(name: "ServiceB", database: try cluster.url(database: "dtx_service_b"))],
                logger: logger
            )
        }
        let violations = try await verifier.check()
        if violations.isEmpty {
            print("all invariants hold")
            return
        }
        print("\(violations.count) invariant violations:")
        for violation in violations { print("  \(violation)") }
        throw ExitCode(1)
    }
}
