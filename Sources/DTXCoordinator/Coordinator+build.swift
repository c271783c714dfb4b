import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
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
}

/// Checks the configuration and the database, applies the schema, releases this instance's old leases, and wires
/// the routes, the recovery loop and the clients.
public func buildCoordinator(
    _ configuration: CoordinatorConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> Coordinator {
    try configuration.validate()
    let instanceID = configuration.instanceID ?? "\(ProcessInfo.processInfo.hostName):\(configuration.port == 0 ? "\(getpid())" : "\(configuration.port)")"
    var logger = logger
    logger[metadataKey: "dtx.coordinator"] = "\(instanceID)"

    let released = try await configuration.databaseURL.withConnection(logger: logger) { connection in
        try await Migrator.migrate(.coordinator, connection: connection, logger: logger)
        return try await connection.query(
            "UPDATE worker_events SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = \(instanceID) RETURNING 1",
            logger: logger
        ).count()
    }
    if released > 0 {
        logger.info("released the leases of this coordinator's previous run", metadata: ["dtx.count": "\(released)"])
    }
    let postgres = PostgresClient(
        configuration: try configuration.databaseURL.clientConfiguration(maximumConnections: configuration.maxDatabaseConnections),
        backgroundLogger: logger
    )
    let timing = configuration.timing
    let log = TransactionLog(client: postgres, owner: instanceID, leaseSeconds: timing.leaseDuration.inSeconds, logger: logger)
    let client = ServiceClient(configuration: .init(token: configuration.token))
    let registry = PrometheusCollectorRegistry()
    let caller = BranchCaller(
        client: client,
        participants: Dictionary(uniqueKeysWithValues: configuration.participants.map { ($0.name, $0.url) }),
        branchTimeout: timing.branchTimeout,
        policy: RetryPolicy(initial: timing.initialBackoff, maximum: timing.maxBackoff),
        registry: registry,
        logger: logger
    )
    var driver = TransactionDriver(log: log, caller: caller, registry: registry, logger: logger)
    driver.xaConcurrentPrepare = configuration.xaConcurrentPrepare
    let recovery = RecoveryLoop(
        log: log, driver: driver, interval: timing.recoveryInterval,
        budget: min(.seconds(5), timing.leaseDuration / 2), batch: configuration.recoveryBatch, registry: registry, logger: logger
    )

    let router = Router(context: DTXRequestContext.self)
    router.add(middleware: ErrorMiddleware(knownPaths: ["/v1/transactions", "/health", "/metrics"]))
    if let token = configuration.token { router.add(middleware: BearerTokenMiddleware(token: token)) }
    CoordinatorRoutes(
        log: log, driver: driver, participants: configuration.participants.map(\.name), timing: timing, logger: logger
    ).add(to: router)
    router.addMetricsRoute(registry)
    let healthLogger = logger
    router.addHealthRoute(["status": "ok", "coordinator": instanceID]) {
        _ = try await postgres.query("SELECT 1", logger: healthLogger).count()
    }

    let application = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "dtx-coordinator"),
        services: [postgres, recovery, ServiceClientLifecycle(client: client)],
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
        logger: logger
    )
    return Coordinator(application: application, log: log, recovery: recovery, instanceID: instanceID)
}

/// `POST /v1/transactions`, `GET /v1/transactions/{id}`, `GET /v1/transactions`.
struct CoordinatorRoutes: Sendable {
    let log: TransactionLog
    let driver: TransactionDriver
    let participants: [String]
    let timing: CoordinatorConfiguration.Timing
    let logger: Logger

    func add(to router: Router<DTXRequestContext>) {
        router.post("/v1/transactions") { request, context in
            try await self.begin(request: request, context: context)
        }
        router.get("/v1/transactions/:id") { _, context -> Response in
            guard let id = context.parameters.get("id", as: Int64.self) else {
                throw ProtocolError.badRequest("transaction id must be an integer")
            }
            guard let view = try await log.view(id: id) else { throw ProtocolError(.notFound, "no transaction \(id)") }
            return try .wire(view)
        }
        router.get("/v1/transactions") { request, _ -> Response in
            var status: GlobalStatus?
            if let text = request.uri.queryParameters.get("status") {
                guard let parsed = GlobalStatus(rawValue: text) else {
                    throw ProtocolError.badRequest("status must be pending, completed, failed or compensated")
                }
                status = parsed
            }
            var limit = 50
            if request.uri.queryParameters.get("limit") != nil {
                limit = Int(try request.queryInteger("limit"))
                guard (1...1000).contains(limit) else { throw ProtocolError.badRequest("limit must be from 1 to 1000") }
            }
            return try .wire(TransactionList(transactions: try await log.list(status: status, limit: limit)))
        }
    }

    func begin(request: Request, context: DTXRequestContext) async throws -> Response {
        let body = try await request.decodeWire(TransactionRequest.self, context: context)
        let branches = try body.resolveBranches(participants: participants).map {
            BranchRecord(participant: $0.participant, productId: $0.productId, quantity: $0.quantity)
        }
        let transaction: GlobalTransaction
        do {
            transaction = try await log.begin(mode: body.mode, request: body, branches: branches, globalTimeout: timing.globalTimeout)
        } catch {
            throw ProtocolError(.databaseUnavailable, "the coordinator cannot write its log: \(error.postgresMessage)")
        }
        var logger = context.logger
        logger[metadataKey: "dtx.worker_event_id"] = "\(transaction.id)"
        logger[metadataKey: "dtx.mode"] = "\(body.mode.rawValue)"

        let driven: GlobalTransaction
        do {
            driven = try await driver.drive(transaction, until: .now + timing.globalTimeout + timing.responseWait)
        } catch let error as TransactionLog.LeaseLost {
            logger.warning("lease lost while driving", metadata: ["dtx.error": "\(error)"])
            return try await answer(id: transaction.id, accepted: true)
        } catch {
            logger.error("log write failed while driving: the recovery loop will resume it", metadata: ["dtx.error": "\(error)"])
            throw ProtocolError(.databaseUnavailable, "worker_event \(transaction.id): the coordinator cannot write its log: \(error.postgresMessage)")
        }
        // built from what was just written: no second read of the log on the hot path
        let view = driven.view
        if !driven.isFinal { return try .wire(view, status: .accepted) }
        return try .wire(view, status: driven.status == .completed ? .ok : .conflict)
    }

    /// 200 completed; 409 failed or compensated, with the reason; 202 when the outcome is decided but the second
    /// phase is still being retried (or not decided yet and another coordinator holds it).
    private func answer(id: Int64, accepted: Bool) async throws -> Response {
        guard let view = try await log.view(id: id) else { throw ProtocolError(.internalError, "worker_event \(id) vanished") }
        if accepted || view.status == .pending { return try .wire(view, status: .accepted) }
        switch view.status {
        case .completed: return try .wire(view)
        default: return try .wire(view, status: .conflict)
        }
    }
}
