import Logging
import PostgresNIO
import ServiceLifecycle

/// Pruning of what a dtx database no longer needs: at a participant the barrier and branch rows of branches final
/// for longer than the horizon, at the coordinator the log rows of transactions finished for longer than it; in
/// batches of a bounded number of rows, each one statement (`dtx_prune` of sql/participant/005, in force as 011, and
/// sql/coordinator/003, which say why no late or replayed request can be applied afterwards).
public struct Retention: Sendable {
    public struct Configuration: Sendable {
        /// Rows are kept at least this long after they are final; zero turns retention off.
        public var horizon: Duration = .seconds(6 * 3600)
        /// How often the job runs.
        public var interval: Duration = .seconds(60)
        /// Branches (or log rows) per statement.
        public var batch: Int = 1000
        /// A pass that takes longer is given up (the next one goes on where it stopped: every batch commits).
        public var passTimeout: Duration = .seconds(600)
        public init() {}
    }

    /// What one pass pruned (or, dry, would prune), per table, and each table's oldest row after it.
    public struct Pass: Sendable, Equatable {
        public var pruned: [String: Int64] = [:]
        public var oldestSeconds: [String: Double] = [:]
        public init() {}
    }

    public let schema: Schema
    public let configuration: Configuration
    let logger: Logger

    public init(schema: Schema, configuration: Configuration, logger: Logger) {
        self.schema = schema
        self.configuration = configuration
        self.logger = logger
    }

    /// Which kind of dtx database `connection` is, from its tables.
    public static func schema(of connection: PostgresConnection, logger: Logger) async throws -> Schema? {
        let rows = try await connection.query(
            "SELECT to_regclass('worker_events') IS NOT NULL, to_regclass('barrier') IS NOT NULL", logger: logger
        )
        for try await (coordinator, participant) in rows.decode((Bool, Bool).self) {
            return coordinator ? .coordinator : participant ? .participant : nil
        }
        return nil
    }

    /// Prunes batch after batch until a batch comes back short; with `dryRun` counts everything prunable in one
    /// statement and changes nothing.
    public func prune(_ connection: PostgresConnection, dryRun: Bool = false) async throws -> Pass {
        var pass = Pass()
        let limit = dryRun ? Int64.max / 2 : Int64(configuration.batch)
        while true {
            let batch = try await pruneOnce(connection, limit: limit, dryRun: dryRun)
            for (table, count) in batch { pass.pruned[table, default: 0] += count }
            if dryRun || (batch["branches"] ?? batch["worker_events"] ?? 0) < limit { break }
        }
        pass.pruned["branches"] = nil
        for try await (table, age) in try await connection.query("SELECT table_name, age_seconds FROM dtx_oldest_rows()", logger: logger)
            .decode((String, Double).self)
        {
            pass.oldestSeconds[table] = age
        }
        return pass
    }

    private func pruneOnce(_ connection: PostgresConnection, limit: Int64, dryRun: Bool) async throws -> [String: Int64] {
        let horizon = configuration.horizon.inSecondsDouble
        switch schema {
        case .participant:
            let rows = try await connection.query(
                "SELECT branches, barrier_rows, transaction_rows FROM dtx_prune(\(horizon), \(limit), \(dryRun))", logger: logger
            )
            for try await (branches, barrier, transactions) in rows.decode((Int64, Int64, Int64).self) {
                return ["branches": branches, "barrier": barrier, "transactions": transactions]
            }
        case .coordinator:
            let rows = try await connection.query("SELECT worker_event_rows FROM dtx_prune(\(horizon), \(limit), \(dryRun))", logger: logger)
            for try await count in rows.decode(Int64.self) { return ["worker_events": count] }
        }
        return [:]
    }
}

/// The retention job of a participant or a coordinator: a pass every `interval`, on a connection of the service's pool.
public struct RetentionJob: Service {
    let retention: Retention
    let client: PostgresClient
    /// Receives every pass, for the metrics.
    let onPass: @Sendable (Retention.Pass) -> Void
    let logger: Logger

    public init(retention: Retention, client: PostgresClient, logger: Logger, onPass: @escaping @Sendable (Retention.Pass) -> Void) {
        self.retention = retention
        self.client = client
        self.logger = logger
        self.onPass = onPass
    }

    public func run() async throws {
        // off (horizon 0): wait for the shutdown all the same; a service that returns at once stops its whole group
        guard retention.configuration.horizon > .zero else {
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown {
            while await pause(for: retention.configuration.interval) {
                do {
                    // bounded: a pass that hung on a lost database call would end retention for good (see withDeadline)
                    let pass = try await withDeadline(retention.configuration.passTimeout) { [client, retention] in
                        try await client.withConnectionClosedOnCancel { try await retention.prune($0) }
                    }
                    onPass(pass)
                    if pass.pruned.values.contains(where: { $0 > 0 }) {
                        logger.info("retention pruned rows", metadata: ["dtx.pruned": "\(pass.pruned)"])
                    }
                } catch {
                    logger.warning("retention pass failed: the next one tries again", metadata: ["dtx.error": "\(error.logDescription)"])
                }
            }
        }
    }
}

extension Duration {
    /// Seconds with fractions (DTXPostgres does not see DTXProtocol's helpers).
    var inSecondsDouble: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
