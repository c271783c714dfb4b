import Foundation

/// A benchmark scenario, read from a JSON file in benchmarks/scenarios/.
public struct Scenario: Codable, Sendable {
    /// A fault that kills a process mid-run.
    public struct Crash: Codable, Sendable {
        /// "ServiceA", "ServiceB" or "coordinator".
        public var target: String
        /// Seconds into the measured run.
        public var atSeconds: Double
        /// How long it stays down before it is restarted.
        public var downSeconds: Double
    }

    /// A partition between the coordinator and a participant, made and healed by the relay.
    public struct Partition: Codable, Sendable {
        /// The participant cut off from the coordinator: "ServiceA" or "ServiceB".
        public var participant: String
        /// Seconds into the measured run.
        public var atSeconds: Double
        /// How long the partition lasts.
        public var forSeconds: Double
    }

    public var name: String
    public var description: String
    public var workload: Workload
    /// Modes for this scenario (default: the command line's), e.g. ["tcc+batch", "xa"].
    public var modes: [String]?
    /// Round-trip times for this scenario (default: the command line's --rtt), e.g. ["5ms"].
    public var rtt: [String]?
    /// Client counts for this scenario (default: the command line's).
    public var clients: [Int]?
    /// Extra `dtx participant` arguments by service, e.g. fault injection.
    public var participantArguments: [String: [String]]?
    public var coordinatorArguments: [String]?
    public var crash: Crash?
    public var partition: Partition?

    public static func load(_ path: String) throws -> Scenario {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioError("cannot read scenario file \(path)")
        }
        let scenario: Scenario
        do {
            scenario = try JSONDecoder().decode(Scenario.self, from: data)
        } catch let error as DecodingError {
            throw ScenarioError("scenario \(path) is not valid: \(error)")
        }
        guard Self.isValidName(scenario.name) else {
            throw ScenarioError(
                "scenario \(path): name '\(scenario.name)' must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' "
                    + "(it names the scenario's folder of logs and its rows in the reports)"
            )
        }
        if let modes = scenario.modes { _ = try BenchMode.list(modes.joined(separator: ",")) }
        if let partition = scenario.partition, !["ServiceA", "ServiceB"].contains(partition.participant) {
            throw ScenarioError("scenario \(path): a partition cuts the coordinator from ServiceA or ServiceB, not '\(partition.participant)'")
        }
        if let crash = scenario.crash, !Self.crashTargets.contains(crash.target) {
            throw ScenarioError("scenario \(path): a crash kills \(Self.crashTargets.joined(separator: ", ")), not '\(crash.target)'")
        }
        let times = [scenario.crash?.atSeconds, scenario.crash?.downSeconds, scenario.partition?.atSeconds, scenario.partition?.forSeconds]
        if times.contains(where: { $0.map { !(0...Self.longestFaultSeconds).contains($0) } ?? false }) {
            throw ScenarioError("scenario \(path): a fault's times are seconds from 0 to \(Int(Self.longestFaultSeconds))")
        }
        if scenario.crash != nil && scenario.partition != nil {
            throw ScenarioError("scenario \(path): one fault per scenario (crash or partition)")
        }
        return scenario
    }

    /// A name that is safe as a folder name and in a Markdown table: before, `../x` put logs outside `--out` and `a|b`
    /// split the report's rows.
    static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.count) && !name.hasPrefix(".")
            && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0) }
    }

    /// The processes a crash can kill.
    public static let crashTargets = ["ServiceA", "ServiceB", "coordinator"]
    /// A day: a fault's time, or how long it lasts, beyond that is a typo (and would not fit a Duration's arithmetic).
    static let longestFaultSeconds = 86_400.0

    /// The scenario's own modes, parsed.
    public var benchModes: [BenchMode]? { modes.flatMap { try? BenchMode.list($0.joined(separator: ",")) } }

    /// Whether the scenario injects a fault (its runs then exclude the baselines and references).
    public var hasFault: Bool { crash != nil || partition != nil }

    /// The parameters to show in the report.
    public var parameters: [String: String] {
        var result = [
            "products": "\(workload.products)", "stock": "\(workload.stock)", "quantity": "\(workload.quantity)",
            "distribution": workload.distribution == .zipf ? "zipf (s = \(workload.zipfExponent))" : "uniform",
        ]
        if workload.failShare > 0 { result["share refused on stock"] = String(format: "%.0f %%", workload.failShare * 100) }
        for (service, arguments) in participantArguments ?? [:] { result["\(service) options"] = arguments.joined(separator: " ") }
        if let crash { result["crash"] = "\(crash.target) killed (SIGKILL) at \(crash.atSeconds) s, restarted \(crash.downSeconds) s later" }
        if let partition {
            result["partition"] = "coordinator cut from \(partition.participant) at \(partition.atSeconds) s for \(partition.forSeconds) s "
                + "(new connections refused, open ones stalled)"
        }
        if let rtt { result["round-trip time"] = rtt.joined(separator: ", ") }
        return result
    }
}

public struct ScenarioError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
