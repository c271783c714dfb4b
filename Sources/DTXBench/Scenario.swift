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

    public var name: String
    public var description: String
    public var workload: Workload
    /// Modes for this scenario (default: the command line's).
    public var modes: [String]?
    /// Client counts for this scenario (default: the command line's).
    public var clients: [Int]?
    /// Extra `dtx participant` arguments by service, e.g. fault injection.
    public var participantArguments: [String: [String]]?
    public var coordinatorArguments: [String]?
    public var crash: Crash?

    public static func load(_ path: String) throws -> Scenario {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioError("cannot read scenario file \(path)")
        }
        do {
            return try JSONDecoder().decode(Scenario.self, from: data)
        } catch let error as DecodingError {
            throw ScenarioError("scenario \(path) is not valid: \(error)")
        }
    }

    /// The parameters to show in the report.
    public var parameters: [String: String] {
        var result = [
            "products": "\(workload.products)", "stock": "\(workload.stock)", "quantity": "\(workload.quantity)",
            "distribution": workload.distribution == .zipf ? "zipf (s = \(workload.zipfExponent))" : "uniform",
        ]
        if workload.failShare > 0 { result["share refused on stock"] = String(format: "%.0f %%", workload.failShare * 100) }
        for (service, arguments) in participantArguments ?? [:] { result["\(service) options"] = arguments.joined(separator: " ") }
        if let crash { result["crash"] = "\(crash.target) killed (SIGKILL) at \(crash.atSeconds) s, restarted \(crash.downSeconds) s later" }
        return result
    }
}

public struct ScenarioError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
