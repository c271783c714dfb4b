import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import PostgresNIO
import Prometheus
import ServiceLifecycle

/// A built coordinator: the application to run, and its parts for tests and tools.
public struct Coordinator: Sendable {
    public let application: Application<RouterResponder<DTXRequestContext>>
    public let log: TransactionLog
    public let recovery: RecoveryLoop
    public let instanceID: String
    /// This process's holder number in the log's lease columns.
    public let holder: Int64
    /// The routes served, for the test that holds them against openapi/coordinator.json.
    public let routes: RouteTable
}

/// Checks the configuration and the database, applies the schema, takes this process's liveness lock, and wires the
/// routes, the recovery loop and the clients.
public func buildCoordinator(
    _ configuration: CoordinatorConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> Coordinator {
    try configuration.validate()
    let instanceID = configuration.instanceID ?? "\(ProcessInfo.processInfo.hostName):\(configuration.port == 0 ? "\(getpid())" : "\(configuration.port)")"
    var logger = logger
    logger[metadataKey: "dtx.coordinator"] = "\(instanceID)"

    let unknown = try await configuration.databaseURL.withConnection(logger: logger) { connection in
        try await Migrator.migrate(.coordinator, connection: connection, logger: logger)
        // participants that open transactions name and this coordinator was not started with: said once, at start
        var names: [String] = []
        let rows = try await connection.query(
            """
            SELECT DISTINCT b->>'participant' FROM worker_events,
                jsonb_array_elements(CASE jsonb_typeof(branches) WHEN 'array' THEN branches ELSE '[]' END) b
            WHERE open
            """, logger: logger
        )
        for try await name in rows.decode(String?.self) {
            if let name, !configuration.participants.contains(where: { $0.name == name }) { names.append(name) }
        }
        return names.sorted()
    }
    if !unknown.isEmpty {
        logger.error("open transactions name participants this coordinator was not started with: they wait until it is", metadata: [
            "dtx.participants": "\(unknown.joined(separator: ", "))", "dtx.fix": "add --participant NAME=URL for each",
        ])
    }
    let holderLock = try await HolderLock.acquire(configuration.databaseURL, logger: logger)
    // from here on a failure lets the liveness lock go: held, it would make other coordinators wait out this one's lease
    do {
        let timing = configuration.timing
        // every log statement is bounded by the database timeout here; the server ends one a little before, so that a write
        // this process gave up on (and answered 503 for: "nothing logged") cannot commit afterwards, when a lock it waited
        // for is released, and be driven by recovery behind the client's back
        let postgres = PostgresClient(
            configuration: try configuration.databaseURL.clientConfiguration(
                maximumConnections: configuration.maxDatabaseConnections, statementTimeout: Coordinator.serverStatementTimeout(timing.databaseTimeout)
            ),
            backgroundLogger: logger
        )
        let machines = ModeMachines(xaConcurrentPrepare: configuration.xaConcurrentPrepare)
        let log = TransactionLog(
            client: postgres, owner: instanceID, holder: holderLock.holder, lease: timing.leaseDuration,
            ids: IdAllocator(client: postgres, callTimeout: timing.databaseTimeout, logger: logger), machines: machines,
            globalTimeout: timing.globalTimeout, callTimeout: timing.databaseTimeout,
            batching: configuration.batchWindow > .zero ? (configuration.batchWindow, configuration.batchMaxItems) : nil, logger: logger
        )
        var clientConfiguration = ServiceClient.Configuration(token: configuration.token)
        clientConfiguration.readTimeout = configuration.timing.branchTimeout + .seconds(1)  // branch calls are all it makes
        let client = ServiceClient(configuration: clientConfiguration)
        let registry = PrometheusCollectorRegistry()
        let advertised = AdvertisedURL(configuration.advertiseURL.flatMap(CoordinatorHeader.validated) ?? Coordinator.defaultURL(configuration, port: configuration.port))
        var caller = BranchCaller(
            client: client,
            participants: Dictionary(uniqueKeysWithValues: configuration.participants.map { ($0.name, $0.url) }),
            branchTimeout: timing.branchTimeout,
            policy: RetryPolicy(initial: timing.initialBackoff, maximum: timing.maxBackoff),
            advertisedURL: advertised,
            batcher: nil,
            registry: registry,
            logger: logger
        )
        if configuration.batchWindow > .zero {
            let unbatched = caller
            caller = BranchCaller(
                client: client, participants: unbatched.participants, branchTimeout: unbatched.branchTimeout, policy: unbatched.policy,
                advertisedURL: advertised,
                batcher: BranchBatcher(window: configuration.batchWindow, maxItems: configuration.batchMaxItems) { key, requests in
                    await unbatched.batch(key, requests)
                },
                registry: registry, logger: logger
            )
        }
        let driver = TransactionDriver(log: log, caller: caller, machines: machines, registry: registry, logger: logger)
        let recovery = RecoveryLoop(
            log: log, driver: driver, interval: timing.recoveryInterval,
            budget: min(.seconds(5), timing.leaseDuration / 2), batch: configuration.recoveryBatch, registry: registry, logger: logger
        )

        let router = Router(context: DTXRequestContext.self)
        let routeTable = RouteTable()
        router.add(middleware: ErrorMiddleware(routes: routeTable))
        if let token = configuration.token { router.add(middleware: BearerTokenMiddleware(token: token)) }
        CoordinatorRoutes(
            log: log, driver: driver, participants: configuration.participants.map(\.name), timing: timing, logger: logger
        ).add(to: router)
        router.addMetricsRoute(registry)
        let healthLogger = logger
        router.addHealthRoute(["status": "ok", "coordinator": instanceID]) {
            _ = try await postgres.rows("SELECT 1", logger: healthLogger)
        }
        router.addOpenAPIRoute(PackageResources.openapi_json)
        if configuration.statusPage { try StatusPage(log: log, instanceID: instanceID).add(to: router) }
        routeTable.fill(router)

        let retention = RetentionJob(
            retention: Retention(schema: .coordinator, configuration: configuration.retention, logger: logger), client: postgres, logger: logger
        ) { registry.recordRetention(pruned: $0.pruned, oldestSeconds: $0.oldestSeconds) }

        let application = Application(
            router: router,
            server: .http1(configuration: ServerSettings.http1),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "dtx-coordinator"),
            // shut down in reverse order (after the HTTP server): the recovery loop stops before the client it calls with
            services: [holderLock, postgres, ServiceClientLifecycle(client: client), recovery, retention],
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                if configuration.advertiseURL == nil { advertised.set(Coordinator.defaultURL(configuration, port: port)) }
                await onServerRunning(port)
            },
            logger: logger
        )
        return Coordinator(application: application, log: log, recovery: recovery, instanceID: instanceID, holder: holderLock.holder, routes: routeTable)
    } catch {
        await holderLock.release()
        throw error
    }
}

extension Coordinator {
    /// The log sessions' `statement_timeout`: the database timeout less a tenth (at most 500 ms), for the time a
    /// statement takes to reach the server.
    static func serverStatementTimeout(_ databaseTimeout: Duration) -> Duration {
        max(.milliseconds(1), databaseTimeout - min(.milliseconds(500), databaseTimeout / 10))
    }

    static func defaultURL(_ configuration: CoordinatorConfiguration, port: Int) -> String {
        let host = configuration.host == "0.0.0.0" || configuration.host == "::" ? ProcessInfo.processInfo.hostName : configuration.host
        return "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }
}

/// `POST /v1/transactions`, `GET /v1/transactions/{id}`, `GET /v1/transactions`.
struct CoordinatorRoutes: Sendable {
    let log: TransactionLog
    let driver: TransactionDriver
    let participants: [String]
    let timing: CoordinatorConfiguration.Timing
    let logger: Logger

    static let idempotencyKeyHeader = HTTPField.Name("Idempotency-Key")!

    func add(to router: Router<DTXRequestContext>) {
        router.post("/v1/transactions") { request, context in
            try await self.begin(request: request, context: context)
        }
        router.get("/v1/transactions/:id") { _, context -> Response in
            guard let id = context.parameters.get("id", as: Int64.self) else {
                throw ProtocolError.badRequest("transaction id must be an integer")
            }
            guard let view = try await log.view(id: id) else {
                if id > 0, try await log.mayHaveIssued(id: id) {
                    throw ProtocolError(.unknownTransaction, "no transaction \(id): it never began here (presumed aborted)")
                }
                throw ProtocolError(.notFound, "no transaction \(id)")
            }
            return try .wire(view)
        }
        router.get("/v1/transactions") { request, _ -> Response in
            let query = request.uri.queryParameters
            var status: GlobalStatus?
            if let text = query.get("status") {
                guard let parsed = GlobalStatus(rawValue: text) else {
                    throw ProtocolError.badRequest("status must be pending, completed, failed or compensated")
                }
                status = parsed
            }
            var mode: Mode?
            if let text = query.get("mode") {
                guard let parsed = Mode(rawValue: text) else { throw ProtocolError.badRequest("mode must be tcc, saga or xa") }
                mode = parsed
            }
            var limit = 50
            if query.get("limit") != nil {
                limit = Int(try request.queryInteger("limit"))
                guard (1...1000).contains(limit) else { throw ProtocolError.badRequest("limit must be from 1 to 1000") }
            }
            var cursor: Int64?
            if let text = query.get("cursor") {
                guard let parsed = Int64(text), parsed > 0 else { throw ProtocolError.badRequest("cursor must be the 'next' value of a previous page") }
                cursor = parsed
            }
            return try .wire(try await log.list(status: status, mode: mode, limit: limit, cursor: cursor))
        }
    }

    func begin(request: Request, context: DTXRequestContext) async throws -> Response {
        let key = try Self.idempotencyKey(request)
        let body = try await request.decodeWire(TransactionRequest.self, context: context)
        let branches = try body.resolveBranches(participants: participants).map {
            BranchRecord(participant: $0.participant, productId: $0.productId, quantity: $0.quantity)
        }
        let begun: TransactionLog.Begun
        do {
            begun = try await log.begin(mode: body.mode, request: body, branches: branches, globalTimeout: timing.globalTimeout, idempotencyKey: key)
        } catch {
            throw ProtocolError(.databaseUnavailable, "the coordinator cannot write its log: \(error.postgresMessage)")
        }
        let transaction: GlobalTransaction
        switch begun {
        case .existing(let id, let sameRequest):
            guard sameRequest else {
                throw ProtocolError(.idempotencyKeyReused, "Idempotency-Key '\(key ?? "")' was used for another request (worker_event \(id))")
            }
            guard let view = try await log.view(id: id) else { throw ProtocolError(.internalError, "worker_event \(id) vanished") }
            return try Self.answer(view, open: view.nextRetryAt != nil)  // set while the transaction is open
        case .created(let created):
            transaction = created
        }
        let logger = context.logger
        // built only for a line that is logged (setting it on the logger would format it on every request)
        let id = transaction.id
        @Sendable func metadata(_ error: any Error) -> Logger.Metadata {
            ["dtx.worker_event_id": "\(id)", "dtx.mode": "\(body.mode.rawValue)", "dtx.error": "\(error.logDescription)"]
        }

        // From here on the transaction is logged: whatever happens, the answer carries its id (202 when not final).
        do {
            let driven = try await driver.drive(transaction, until: .now + timing.globalTimeout + timing.responseWait)
            // built from what was just written: no second read of the log on the hot path
            return try Self.answer(driven.view(decision: driver.machines[driven.mode].decision(in: driven.phase)), open: driven.isOpen)
        } catch let error as TransactionLog.LeaseLost {
            logger.warning("lease lost while driving", metadata: metadata(error))
        } catch {
            logger.error("log write failed while driving: the recovery loop will resume it", metadata: metadata(error))
        }
        // the row as the log has it now: another driver may have finished it meanwhile (then its final answer)
        if let view = try? await log.view(id: transaction.id) { return try Self.answer(view, open: view.nextRetryAt != nil) }
        return try Self.answer(transaction.view(decision: nil), open: true)
    }

    /// 200 completed; 409 failed or compensated, with the reason; 202 while the transaction is still open (decided but
    /// the second phase is still being retried, or held by another driver).
    static func answer(_ view: TransactionView, open: Bool) throws -> Response {
        if open { return try .wire(view, status: .accepted) }
        return try .wire(view, status: view.status == .completed ? .ok : .conflict)
    }

    /// The `Idempotency-Key` header: 1 to 255 visible ASCII characters, else 400.
    static func idempotencyKey(_ request: Request) throws -> String? {
        guard let key = request.headers[idempotencyKeyHeader] else { return nil }
        guard (1...255).contains(key.utf8.count), key.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw ProtocolError.badRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
        }
        return key
    }
}
