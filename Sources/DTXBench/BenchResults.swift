import Foundation

/// Everything one `dtx bench` invocation measured: written to `results.json`, read back by `dtx report`.
public struct BenchResults: Codable, Sendable {
    public var environment: BenchEnvironment
    /// Run-wide settings: repetitions, duration per cell, warm-up.
    public var settings: BenchSettings
    public var scenarios: [ScenarioResult]

    public init(environment: BenchEnvironment, settings: BenchSettings, scenarios: [ScenarioResult]) {
        self.environment = environment
        self.settings = settings
        self.scenarios = scenarios
    }
}

public struct BenchEnvironment: Codable, Sendable {
    public var cpuModel: String
    public var cores: Int
    public var memoryGiB: Double
    public var os: String
    public var postgresVersion: String
    /// Server settings that matter for the numbers (fsync, synchronous_commit, max_connections, ...).
    public var postgresSettings: [String: String]
    public var gitCommit: String
    public var buildConfiguration: String
    public var startedAt: String
    public var finishedAt: String

    public init(
        cpuModel: String, cores: Int, memoryGiB: Double, os: String, postgresVersion: String, postgresSettings: [String: String],
        gitCommit: String, buildConfiguration: String, startedAt: String, finishedAt: String
    ) {
        self.cpuModel = cpuModel
        self.cores = cores
        self.memoryGiB = memoryGiB
        self.os = os
        self.postgresVersion = postgresVersion
        self.postgresSettings = postgresSettings
        self.gitCommit = gitCommit
        self.buildConfiguration = buildConfiguration
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }
}

public struct BenchSettings: Codable, Sendable {
    /// The round-trip times run (milliseconds); [0] when no --rtt was given.
    public var rttMs: [Double]?
    public var repeats: Int
    public var durationSeconds: Double
    public var warmupSeconds: Double
    /// "closed" (each client sends its next request when the last one is answered) or "open" (fixed arrival rate).
    public var loop: String
    /// Open loop only: the target arrival rate, requests per second.
    public var rate: Double?
    /// The `+batch` rows' `--batch-window` (milliseconds), when the bench was given one; else the coordinator's default.
    public var batchWindowMs: Double?

    public init(
        rttMs: [Double]? = nil, repeats: Int, durationSeconds: Double, warmupSeconds: Double, loop: String, rate: Double?,
        batchWindowMs: Double? = nil
    ) {
        self.batchWindowMs = batchWindowMs
        self.rttMs = rttMs
        self.repeats = repeats
        self.durationSeconds = durationSeconds
        self.warmupSeconds = warmupSeconds
        self.loop = loop
        self.rate = rate
    }
}

public struct ScenarioResult: Codable, Sendable {
    /// The scenario file's name, e.g. "uniform".
    public var name: String
    public var description: String
    /// The workload and fault parameters as the scenario file gave them (products, stock, distribution, ...).
    public var parameters: [String: String]
    /// One cell per mode and client count.
    public var cells: [CellResult]
    /// Crash scenarios: one timeline per fault injected (empty otherwise).
    public var recoveries: [RecoveryTimeline]

    public init(name: String, description: String, parameters: [String: String], cells: [CellResult], recoveries: [RecoveryTimeline]) {
        self.name = name
        self.description = description
        self.parameters = parameters
        self.cells = cells
        self.recoveries = recoveries
    }
}

/// One mode at one client count and one round-trip time: every repetition, and their summary.
public struct CellResult: Codable, Sendable {
    public var mode: BenchMode
    public var clients: Int
    /// The round-trip time between every two parts (0: loopback, no relay).
    public var rttMs: Double
    public var runs: [RunResult]
    public var summary: CellSummary

    public init(mode: BenchMode, clients: Int, rttMs: Double = 0, runs: [RunResult], summary: CellSummary) {
        self.mode = mode
        self.clients = clients
        self.rttMs = rttMs
        self.runs = runs
        self.summary = summary
    }

    enum CodingKeys: String, CodingKey { case mode, clients, rttMs, runs, summary }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mode = try container.decode(BenchMode.self, forKey: .mode)
        clients = try container.decode(Int.self, forKey: .clients)
        rttMs = try container.decodeIfPresent(Double.self, forKey: .rttMs) ?? 0  // results written before the RTT dimension
        runs = try container.decode([RunResult].self, forKey: .runs)
        summary = try container.decode(CellSummary.self, forKey: .summary)
    }
}

/// The median of the repetitions, with min and max where it matters.
public struct CellSummary: Codable, Sendable {
    public var throughput: Spread
    public var latencyMs: Percentiles
    public var outcomes: Outcomes
    public var retries: Int
    /// CPU seconds per 1,000 global transactions, by process: "coordinator", "ServiceA", "ServiceB", each PostgreSQL
    /// server ("postgres-coordinator", "postgres-ServiceA", "postgres-ServiceB"; one "postgres" when the parts share a
    /// server, and in results written before the servers were told apart), "loadgen", "relay".
    public var cpuSecondsPer1000: [String: Double]
    /// Median throughput over `local`'s median throughput at the same client count (nil when local was not run).
    public var ratioToLocal: Double?
    /// Median throughput over `direct`'s median throughput at the same client count.
    public var ratioToDirect: Double?
    /// Median throughput over pgbench's `pgbench-local` and `pgbench-2pc` at the same client count and RTT.
    public var ratioToPgbenchLocal: Double?
    public var ratioToPgbench2PC: Double?
    /// True when the invariant check held after every repetition.
    public var invariantsHeld: Bool

    public init(
        throughput: Spread, latencyMs: Percentiles, outcomes: Outcomes, retries: Int, cpuSecondsPer1000: [String: Double],
        ratioToLocal: Double?, ratioToDirect: Double?, ratioToPgbenchLocal: Double? = nil, ratioToPgbench2PC: Double? = nil,
        invariantsHeld: Bool
    ) {
        self.throughput = throughput
        self.latencyMs = latencyMs
        self.outcomes = outcomes
        self.retries = retries
        self.cpuSecondsPer1000 = cpuSecondsPer1000
        self.ratioToLocal = ratioToLocal
        self.ratioToDirect = ratioToDirect
        self.ratioToPgbenchLocal = ratioToPgbenchLocal
        self.ratioToPgbench2PC = ratioToPgbench2PC
        self.invariantsHeld = invariantsHeld
    }
}

public struct Spread: Codable, Sendable {
    public var median: Double
    public var min: Double
    public var max: Double

    public init(median: Double, min: Double, max: Double) {
        self.median = median
        self.min = min
        self.max = max
    }
}

public struct Percentiles: Codable, Sendable {
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double

    public init(p50: Double, p90: Double, p99: Double, p999: Double, max: Double) {
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
        self.p999 = p999
        self.max = max
    }
}

public struct Outcomes: Codable, Sendable {
    public var completed: Int
    public var failed: Int
    public var compensated: Int
    /// Answered 202: decided, second phase still being retried when the answer came.
    public var pending: Int
    /// Transport errors and unexpected statuses.
    public var errors: Int

    public init(completed: Int = 0, failed: Int = 0, compensated: Int = 0, pending: Int = 0, errors: Int = 0) {
        self.completed = completed
        self.failed = failed
        self.compensated = compensated
        self.pending = pending
        self.errors = errors
    }

    public var total: Int { completed + failed + compensated + pending + errors }
}

/// One repetition of one cell.
public struct RunResult: Codable, Sendable {
    public var repetition: Int
    public var durationSeconds: Double
    public var transactions: Int
    public var throughput: Double
    public var latencyMs: Percentiles
    public var outcomes: Outcomes
    public var retries: Int
    public var cpuSeconds: [String: Double]
    public var invariantsHeld: Bool
    /// What the invariant check found wrong (empty when it held).
    public var violations: [String]

    public init(
        repetition: Int, durationSeconds: Double, transactions: Int, throughput: Double, latencyMs: Percentiles, outcomes: Outcomes,
        retries: Int, cpuSeconds: [String: Double], invariantsHeld: Bool, violations: [String]
    ) {
        self.repetition = repetition
        self.durationSeconds = durationSeconds
        self.transactions = transactions
        self.throughput = throughput
        self.latencyMs = latencyMs
        self.outcomes = outcomes
        self.retries = retries
        self.cpuSeconds = cpuSeconds
        self.invariantsHeld = invariantsHeld
        self.violations = violations
    }
}

/// A crash or partition scenario's fault and what followed, per mode.
public struct RecoveryTimeline: Codable, Sendable {
    public var mode: BenchMode
    /// The round-trip time of the run (nil in results written before the RTT dimension: 0).
    public var rttMs: Double?
    /// Which repetition of the cell (1-based); absent in results written before it was recorded.
    public var repetition: Int?
    /// e.g. "ServiceB killed (SIGKILL) and restarted", "coordinator killed (SIGKILL) and restarted".
    public var fault: String
    /// Seconds from the start of the run.
    public var faultAtSeconds: Double
    /// When every global transaction begun before the fault had reached its final outcome (every branch applied).
    public var resolvedAtSeconds: Double?
    /// resolvedAt - faultAt.
    public var recoverySeconds: Double?
    /// Completed global transactions per second, one sample per `sampleSeconds`.
    public var throughputSamples: [Double]
    public var sampleSeconds: Double
    public var invariantsHeld: Bool

    public init(
        mode: BenchMode, rttMs: Double? = 0, repetition: Int? = nil, fault: String, faultAtSeconds: Double, resolvedAtSeconds: Double?,
        recoverySeconds: Double?, throughputSamples: [Double], sampleSeconds: Double, invariantsHeld: Bool
    ) {
        self.mode = mode
        self.rttMs = rttMs
        self.repetition = repetition
        self.fault = fault
        self.faultAtSeconds = faultAtSeconds
        self.resolvedAtSeconds = resolvedAtSeconds
        self.recoverySeconds = recoverySeconds
        self.throughputSamples = throughputSamples
        self.sampleSeconds = sampleSeconds
        self.invariantsHeld = invariantsHeld
    }
}
