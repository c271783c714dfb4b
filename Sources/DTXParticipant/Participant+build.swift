import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Hummingbird
import Logging
import PostgresNIO
import Prometheus
import ServiceLifecycle

/// `GET /health`.
public struct Health: Codable, Sendable {
    public var status: String
    public var service: String
    public var xa: Bool?
    public init(status: String, service: String, xa: Bool? = nil) {
        self.status = status
        self.service = service
        self.xa = xa
    }
}

/// A built participant: the application to run, and its parts for tests and tools.
public struct Participant: Sendable {
    public let application: Application<RouterResponder<DTXRequestContext>>
    public let ledger: StockLedger
    public let reconciler: Reconciler
    /// False when the server has max_prepared_transactions = 0: XA calls then get 503.
    public let xaEnabled: Bool
}

/// Checks the database, applies the schema, and wires the participant's routes and services.
///
/// `onServerRunning` receives the bound port (useful with port 0).
public func buildParticipant(
    _ configuration: ParticipantConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> Participant {
    try ParticipantConfiguration.validateName(configuration.name)
    var logger = logger
    logger[metadataKey: "dtx.service"] = "\(configuration.name)"

    let (maxPrepared, databaseOID) = try await configuration.databaseURL.withConnection(logger: logger) { connection in
        try await Migrator.migrate(.participant, connection: connection, logger: logger)
        let rows = try await connection.query(
            """
            SELECT current_setting('max_prepared_transactions')::int, oid::bigint FROM pg_database WHERE datname = current_database()
            """,
            logger: logger
        )
        for try await (maxPrepared, oid) in rows.decode((Int, Int64).self) { return (maxPrepared, oid) }
        throw ConfigurationError("cannot read max_prepared_transactions and the database OID")
    }
    let xaEnabled = maxPrepared > 0
    if !xaEnabled {
        logger.warning("XA is off: the database server has max_prepared_transactions = 0; TCC and Saga are served, XA calls get 503")
    }

    let postgres = PostgresClient(
        configuration: try configuration.databaseURL.clientConfiguration(maximumConnections: configuration.maxDatabaseConnections),
        backgroundLogger: logger
    )
    let ledger = StockLedger(client: postgres, service: configuration.name, databaseOID: databaseOID, lockTimeout: configuration.lockTimeout, logger: logger)
    let client = ServiceClient(configuration: .init(token: configuration.token))
    let registry = PrometheusCollectorRegistry()
    let reconciler = Reconciler(
        ledger: ledger,
        coordinatorURL: configuration.coordinatorURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 },
        client: client,
        configuration: configuration.reconciler,
        registry: registry,
        logger: logger
    )

    let router = Router(context: DTXRequestContext.self)
    let branchPaths = BranchOperation.allCases.map(\.path)
    router.add(middleware: ErrorMiddleware(knownPaths: Set(branchPaths + ["/tcc/status", "/health", "/metrics"])))
    if let token = configuration.token { router.add(middleware: BearerTokenMiddleware(token: token)) }

    let routes = ParticipantRoutes(
        service: configuration.name, ledger: ledger, xaEnabled: xaEnabled, faults: configuration.faults,
        operationTimeout: configuration.operationTimeout, registry: registry
    )
    routes.add(to: router)
    router.addMetricsRoute(registry)
    let healthLogger = logger
    router.addHealthRoute(Health(status: "ok", service: configuration.name, xa: xaEnabled)) {
        _ = try await postgres.query("SELECT 1", logger: healthLogger).count()
    }

    let application = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: configuration.name),
        services: [postgres, reconciler, ServiceClientLifecycle(client: client)],
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
        logger: logger
    )
    return Participant(application: application, ledger: ledger, reconciler: reconciler, xaEnabled: xaEnabled)
}

/// The branch routes, product reads and the TCC status route.
struct ParticipantRoutes: Sendable {
    let service: String
    let ledger: StockLedger
    let xaEnabled: Bool
    let faults: FaultInjection
    let operationTimeout: Duration
    let registry: PrometheusCollectorRegistry

    func add(to router: Router<DTXRequestContext>) {
        for op in BranchOperation.allCases {
            router.post(RouterPath(op.path)) { request, context in
                try await self.handle(op, request: request, context: context)
            }
        }
        router.get("/products/:id") { _, context -> Response in
            guard let id = context.parameters.get("id", as: Int64.self) else { throw ProtocolError.badRequest("product id must be an integer") }
            guard let product = try await ledger.product(id: id) else {
                throw ProtocolError(.notFound, "product \(id) does not exist at \(service)")
            }
            return try .wire(product)
        }
        router.get("/tcc/status") { request, _ -> Response in
            let status = try await ledger.branchStatus(
                workerEventId: try request.queryInteger("worker_event_id"),
                productId: try request.queryInteger("product_id")
            )
            return try .wire(status)
        }
    }

    func handle(_ op: BranchOperation, request: Request, context: DTXRequestContext) async throws -> Response {
        let body = try await request.decodeWire(BranchRequest.self, context: context)
        try body.validate()
        var logger = context.logger
        logger[metadataKey: "dtx.worker_event_id"] = "\(body.workerEventId)"
        logger[metadataKey: "dtx.product_id"] = "\(body.productId)"
        logger[metadataKey: "dtx.op"] = "\(op.mode.rawValue).\(op.rawValue)"
        if op.mode == .xa && !xaEnabled {
            throw ProtocolError(
                .xaDisabled,
                "XA is off at \(service): its PostgreSQL server has max_prepared_transactions = 0; set it above 0 (e.g. 100) and restart the server"
            )
        }
        if faults.isActive {
            if Double.random(in: 0..<1) < faults.delayRate { try await Task.sleep(for: faults.delay) }
            if Double.random(in: 0..<1) < faults.errorRate {
                self.count(op, outcome: "injected_fault")
                throw ProtocolError(.injectedFault, "injected fault: \(op.rawValue) not run")
            }
        }
        let start = ContinuousClock.now
        do {
            let result: BranchResponse
            do {
                result = try await withDeadline(operationTimeout) { try await ledger.perform(op, body) }
            } catch is DeadlineExceeded {
                throw ProtocolError(.databaseUnavailable, "the database did not answer within \(operationTimeout): retry")
            }
            registry.latencyHistogram("dtx_branch_duration_seconds", [("mode", op.mode.rawValue), ("op", op.rawValue)])
                .record(ContinuousClock.now - start)
            self.count(op, outcome: result.effect.rawValue)
            logger.debug("branch operation", metadata: ["dtx.effect": "\(result.effect.rawValue)"])
            if faults.lostReplyRate > 0 && Double.random(in: 0..<1) < faults.lostReplyRate {
                throw ProtocolError(.injectedFault, "injected fault: \(op.rawValue) was done but this reply says it was not")
            }
            return try .wire(result)
        } catch let error as ProtocolError {
            self.count(op, outcome: error.code.rawValue)
            if error.httpStatus >= 500 {
                logger.warning("branch operation failed", metadata: ["dtx.error": "\(error)"])
            } else {
                logger.debug("branch operation refused", metadata: ["dtx.error": "\(error)"])
            }
            throw error
        }
    }

    private func count(_ op: BranchOperation, outcome: String) {
        registry.counter("dtx_branch_operations_total", [("mode", op.mode.rawValue), ("op", op.rawValue), ("outcome", outcome)])
            .increment()
    }
}
