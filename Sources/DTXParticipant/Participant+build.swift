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
    /// False when the server has max_prepared_transactions = 0: XA prepares then get 409 xa_unavailable.
    public let xaEnabled: Bool
    /// The routes served, for the test that holds them against openapi/participant.json.
    public let routes: RouteTable
}

/// Checks the database, applies the schema, and wires the participant's routes and services.
///
/// `onServerRunning` receives the bound port (useful with port 0).
public func buildParticipant(
    _ configuration: ParticipantConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> Participant {
    try configuration.validate()
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
        logger.warning("XA is off: the database server has max_prepared_transactions = 0; TCC and Saga are served, XA prepares get 409 xa_unavailable")
    }

    let postgres = PostgresClient(
        configuration: try configuration.databaseURL.clientConfiguration(maximumConnections: configuration.maxDatabaseConnections),
        backgroundLogger: logger
    )
    let ledger = StockLedger(
        client: postgres, service: configuration.name, databaseOID: databaseOID, lockTimeout: configuration.lockTimeout,
        operationTimeout: configuration.operationTimeout, xaEnabled: xaEnabled, logger: logger
    )
    let coordinators = KnownCoordinators(client: postgres, configured: configuration.coordinatorURL.flatMap(CoordinatorHeader.validated), logger: logger)
    var clientConfiguration = ServiceClient.Configuration(token: configuration.token)
    clientConfiguration.readTimeout = configuration.reconciler.coordinatorTimeout + .seconds(1)  // it only asks coordinators
    let client = ServiceClient(configuration: clientConfiguration)
    let registry = PrometheusCollectorRegistry()
    let reconciler = Reconciler(
        ledger: ledger,
        coordinators: coordinators,
        client: client,
        configuration: configuration.reconciler,
        registry: registry,
        logger: logger
    )

    let router = Router(context: DTXRequestContext.self)
    let routeTable = RouteTable()
    router.add(middleware: ErrorMiddleware(routes: routeTable))
    if let token = configuration.token { router.add(middleware: BearerTokenMiddleware(token: token)) }

    let routes = ParticipantRoutes(
        service: configuration.name, ledger: ledger, coordinators: coordinators, faults: configuration.faults, registry: registry
    )
    routes.add(to: router)
    router.addMetricsRoute(registry)
    let healthLogger = logger
    router.addHealthRoute(Health(status: "ok", service: configuration.name, xa: xaEnabled)) {
        _ = try await postgres.rows("SELECT 1", logger: healthLogger)
    }
    router.addOpenAPIRoute(PackageResources.openapi_json)
    routeTable.fill(router)

    let retention = RetentionJob(
        retention: Retention(schema: .participant, configuration: configuration.retention, logger: logger), client: postgres, logger: logger
    ) { registry.recordRetention(pruned: $0.pruned, oldestSeconds: $0.oldestSeconds) }

    let application = Application(
        router: router,
        server: .http1(configuration: ServerSettings.http1),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: configuration.name),
        // shut down in reverse order (after the HTTP server): the reconciler stops before the client it asks with
        services: [postgres, ServiceClientLifecycle(client: client), reconciler, retention],
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
        logger: logger
    )
    return Participant(application: application, ledger: ledger, reconciler: reconciler, xaEnabled: xaEnabled, routes: routeTable)
}

/// The branch routes, product reads and the TCC status route.
struct ParticipantRoutes: Sendable {
    let service: String
    let ledger: StockLedger
    let coordinators: KnownCoordinators
    let faults: FaultInjection
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

    /// One branch request (a JSON object), or for a second-phase operation a batch (a JSON array of them), answered
    /// with an array of per-item results.
    func handle(_ op: BranchOperation, request: Request, context: DTXRequestContext) async throws -> Response {
        let body = try await request.collectWire(context: context)
        // TCC confirm may finalize in the same statement (the coordinator's batched second phase)
        let thenFinalize = try request.queryFlag("finalize")
        guard !thenFinalize || op == .tccConfirm else { throw ProtocolError.badRequest("only /tcc/confirm takes finalize=true") }
        // the calling coordinator is noted once the request has been found valid, before any work (the reconciler asks
        // it about an in-doubt XA branch, whose row is inside the prepared transaction); a malformed request adds none
        let coordinator = request.coordinatorURL
        if body.first(where: { !WireJSON.isWhitespace($0) }) == UInt8(ascii: "[") {
            guard !op.isFirstPhase else { throw ProtocolError.badRequest("\(op.path) takes one branch request; only second-phase operations take an array") }
            let items = try WireJSON.decode([BranchRequest].self, from: body)
            guard (1...Limits.maxBatchItems).contains(items.count) else {
                throw ProtocolError.badRequest("a batch holds 1 to \(Limits.maxBatchItems) branch requests, not \(items.count)")
            }
            return try await handleBatch(op, items, thenFinalize: thenFinalize, coordinator: coordinator, context: context)
        }
        let branch = try WireJSON.decode(BranchRequest.self, from: body)
        try branch.validate()
        if let coordinator { await coordinators.note(coordinator) }
        let logger = context.logger
        // the branch's metadata, built only for a line that is logged (setting it on the logger would format the
        // handler's metadata on every request, whatever the level)
        @Sendable func metadata(_ key: String, _ value: String) -> Logger.Metadata {
            [
                "dtx.worker_event_id": "\(branch.workerEventId)", "dtx.product_id": "\(branch.productId)",
                "dtx.op": "\(op.mode.rawValue).\(op.rawValue)", key: "\(value)",
            ]
        }
        try await injectFaultsBefore(op)
        let start = ContinuousClock.now
        do {
            let result = try await ledger.perform(op, branch, coordinator: coordinator, thenFinalize: thenFinalize)
            registry.latencyHistogram("dtx_branch_duration_seconds", [("mode", op.mode.rawValue), ("op", op.rawValue)])
                .record(ContinuousClock.now - start)
            self.count(op, outcome: result.effect.rawValue)
            logger.debug("branch operation", metadata: metadata("dtx.effect", result.effect.rawValue))
            try injectFaultsAfter(op)
            return try .wire(result)
        } catch let error as ProtocolError {
            self.count(op, outcome: error.code.rawValue)
            if error.httpStatus >= 500 {
                logger.warning("branch operation failed", metadata: metadata("dtx.error", "\(error.logDescription)"))
            } else {
                logger.debug("branch operation refused", metadata: metadata("dtx.error", "\(error)"))
            }
            throw error
        }
    }

    func handleBatch(
        _ op: BranchOperation, _ requests: [BranchRequest], thenFinalize: Bool, coordinator: String?, context: DTXRequestContext
    ) async throws -> Response {
        // a malformed item makes the request malformed (400, nothing done); refusals are answered per item
        for (index, request) in requests.enumerated() {
            do {
                try request.validate()
            } catch {
                throw ProtocolError.badRequest("item [\(index)]: \(error.message)")
            }
        }
        if let coordinator { await coordinators.note(coordinator) }
        var items = [BranchBatchItem?](repeating: nil, count: requests.count)
        let valid = Array(requests.enumerated())
        try await injectFaultsBefore(op)
        let start = ContinuousClock.now
        let validRequests = valid.map(\.1)
        // not bounded as a whole: each call inside is, and the answer has every item (a deadline over all of them turned
        // one slow item into a 503 for the whole batch, items already done included)
        let done = await ledger.performBatch(op, validRequests, thenFinalize: thenFinalize)
        registry.latencyHistogram("dtx_branch_batch_duration_seconds", [("mode", op.mode.rawValue), ("op", op.rawValue)])
            .record(ContinuousClock.now - start)
        registry.counter("dtx_branch_batches_total", [("mode", op.mode.rawValue), ("op", op.rawValue)]).increment()
        for ((index, _), item) in zip(valid, done) {
            items[index] = item
            self.count(op, outcome: item.result?.effect.rawValue ?? item.error?.code.rawValue ?? "unknown")
            if item.httpStatus >= 500 {
                context.logger.warning("batched branch operation failed", metadata: [
                    "dtx.worker_event_id": "\(item.workerEventId)", "dtx.op": "\(op.mode.rawValue).\(op.rawValue)", "dtx.error": "\(item.error.map { "\($0)" } ?? "")",
                ])
            }
        }
        try injectFaultsAfter(op)
        return try .wire(items.map { $0! })
    }

    private func injectFaultsBefore(_ op: BranchOperation) async throws {
        guard faults.isActive else { return }
        if faults.delayRate > 0 && Double.random(in: 0..<1) < faults.delayRate { try await Task.sleep(for: faults.delay) }
        if faults.errorRate > 0 && Double.random(in: 0..<1) < faults.errorRate {
            self.count(op, outcome: "injected_fault")
            throw ProtocolError(.injectedFault, "injected fault: \(op.rawValue) not run")
        }
    }

    private func injectFaultsAfter(_ op: BranchOperation) throws {
        if faults.lostReplyRate > 0 && Double.random(in: 0..<1) < faults.lostReplyRate {
            throw ProtocolError(.injectedFault, "injected fault: \(op.rawValue) was done but this reply says it was not")
        }
    }

    private func count(_ op: BranchOperation, outcome: String) {
        registry.counter("dtx_branch_operations_total", [("mode", op.mode.rawValue), ("op", op.rawValue), ("outcome", outcome)])
            .increment()
    }
}
