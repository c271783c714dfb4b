import DTXProtocol

/// What one row of the benchmark runs: a coordinator mode (canonical, or with batched second phases), a baseline
/// without a coordinator, or a reference from pgbench (libpq, C) on the same server.
public enum BenchMode: String, Codable, CaseIterable, Sendable {
    /// pgbench: both stock rows in one local transaction.
    case pgbenchLocal = "pgbench-local"
    /// pgbench: two PREPARE TRANSACTION, then two COMMIT PREPARED (raw two-branch 2PC, no coordinator).
    case pgbench2PC = "pgbench-2pc"
    /// Both decrements in one local transaction, from the load generator (PostgresNIO).
    case local
    /// The client reserves at both participants itself: no coordinator, no atomicity.
    case direct
    case tcc
    case tccBatch = "tcc+batch"
    case saga
    case sagaBatch = "saga+batch"
    case xa
    case xaBatch = "xa+batch"

    /// The coordinator mode, for the rows that go through the coordinator.
    public var protocolMode: Mode? {
        switch self {
        case .tcc, .tccBatch: .tcc
        case .saga, .sagaBatch: .saga
        case .xa, .xaBatch: .xa
        case .pgbenchLocal, .pgbench2PC, .local, .direct: nil
        }
    }

    /// Second-phase calls batched and log writes group-committed (the coordinator's default).
    public var batched: Bool { self == .tccBatch || self == .sagaBatch || self == .xaBatch }

    /// pgbench's reference rows.
    public var isReference: Bool { self == .pgbenchLocal || self == .pgbench2PC }

    /// Rows without a coordinator: the references and the two baselines.
    public var isBaseline: Bool { protocolMode == nil }

    /// The order of the reports' tables.
    public static let reportOrder: [BenchMode] = allCases

    /// Parses a comma-separated list; the error names what is wrong.
    public static func list(_ text: String) throws -> [BenchMode] {
        try text.split(separator: ",").map { item in
            let name = item.trimmingCharacters(in: .whitespaces)
            guard let mode = BenchMode(rawValue: name) else {
                throw ScenarioError("unknown mode '\(name)': use \(allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return mode
        }
    }
}
