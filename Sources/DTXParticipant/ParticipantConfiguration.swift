import DTXPostgres

/// Everything a participant (a stock service such as ServiceA) needs to run.
public struct ParticipantConfiguration: Sendable {
    /// The service name, e.g. `ServiceA`: written in `transactions.service` and in XA gids, so it must be
    /// 1 to 40 letters, digits or `_`.
    public var name: String
    public var host: String = "127.0.0.1"
    /// 0 picks a free port (tests).
    public var port: Int = 8080
    public var databaseURL: DatabaseURL
    /// The coordinator's base URL, asked by the reconciler for the outcome of stale branches.
    public var coordinatorURL: String?
    /// When set, every request must carry `Authorization: Bearer <token>`, and calls to the coordinator send it.
    public var token: String?
    public var reconciler = Reconciler.Configuration()
    /// Pruning of branches final for longer than the horizon (see sql/participant/005).
    public var retention = Retention.Configuration()
    /// How long a branch operation waits for a row lock before answering 503 (the caller retries).
    public var lockTimeout: Duration = .seconds(2)
    /// A branch operation that takes longer (the database is down, say) is answered 503; it may still finish later,
    /// which the barrier makes harmless.
    public var operationTimeout: Duration = .seconds(5)
    public var maxDatabaseConnections: Int = 40
    public var faults = FaultInjection()

    public init(name: String, databaseURL: DatabaseURL) {
        self.name = name
        self.databaseURL = databaseURL
    }

    static func validateName(_ name: String) throws {
        guard (1...40).contains(name.count), name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
            throw ConfigurationError("participant name '\(name)' must be 1 to 40 letters, digits or _ (it becomes part of XA gids)")
        }
    }

    /// Settings that would make the service spin, refuse all work or never answer, each with the flag to fix.
    func validate() throws {
        try Self.validateName(name)
        guard (0...65535).contains(port) else { throw ConfigurationError("--port \(port) is not a TCP port: give 1 to 65535 (0 picks a free one)") }
        guard lockTimeout > .zero else { throw ConfigurationError("--lock-timeout must be above 0 (0 would wait for a row lock for ever)") }
        // each database call is bounded by operationTimeout: a longer lock wait would be cut off there and answered 503
        // while the statement still waits in the server
        guard lockTimeout < operationTimeout else {
            throw ConfigurationError("--lock-timeout (\(lockTimeout)) must be below \(operationTimeout), the bound of each database call")
        }
        guard reconciler.interval > .zero else { throw ConfigurationError("--reconcile-interval must be above 0") }
        guard reconciler.staleAfter >= .zero else { throw ConfigurationError("--stale-after must not be negative") }
        guard maxDatabaseConnections >= 1 else { throw ConfigurationError("--max-connections must be at least 1") }
        for (flag, rate) in [("--fault-error-rate", faults.errorRate), ("--fault-lost-reply-rate", faults.lostReplyRate), ("--fault-delay-rate", faults.delayRate)]
        where !(0...1).contains(rate) {
            throw ConfigurationError("\(flag) \(rate) is not a share: give a number from 0 to 1, e.g. 0.05")
        }
    }
}

/// Fault injection for the benchmark's flaky scenario. Off by default.
public struct FaultInjection: Sendable {
    /// Share of branch calls answered 503 before any work.
    public var errorRate: Double = 0
    /// Share of branch calls whose work is done and committed but whose answer is a 503 (a lost reply).
    public var lostReplyRate: Double = 0
    /// Share of branch calls delayed by `delay` before the work.
    public var delayRate: Double = 0
    public var delay: Duration = .milliseconds(500)

    public init() {}

    public var isActive: Bool { errorRate > 0 || lostReplyRate > 0 || delayRate > 0 }
}

public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
