import DTXHTTP
import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import PostgresNIO
import Testing

extension ServiceClient {
    /// A test's own client. Its connect timeout is generous: the suite runs many services in parallel on a small
    /// machine, where the 1 s default (right for a coordinator, which must give up on an unreachable participant
    /// quickly) can pass before a loaded event loop completes a connect to loopback.
    static func forTests(token: String? = nil) -> ServiceClient {
        var configuration = ServiceClient.Configuration(token: token)
        configuration.connectTimeout = .seconds(10)
        return ServiceClient(configuration: configuration)
    }
}

/// One participant (ServiceA) on its own fresh database, with an HTTP client to call it.
struct ParticipantFixture: Sendable {
    let database: DatabaseURL
    let service: RunningService
    let participant: Participant
    let client: ServiceClient
    let configuration: ParticipantConfiguration

    static func with(
        name: String = "ServiceA",
        configure: (inout ParticipantConfiguration) -> Void = { _ in },
        _ body: (ParticipantFixture) async throws -> Void
    ) async throws {
        let database = try await TestPostgres.shared.newDatabase("participant")
        var configuration = participantConfiguration(name, database)
        configure(&configuration)
        let (service, participant) = try await RunningService.participant(configuration)
        let client = ServiceClient.forTests(token: configuration.token)
        let fixture = ParticipantFixture(
            database: database, service: service, participant: participant, client: client, configuration: configuration
        )
        try await withCleanup {
            try await body(fixture)
        } cleanup: {
            await service.stop()
            try? await client.shutdown()
        }
    }

    func call(_ op: BranchOperation, _ worker: Int64, product: Int64 = 1, quantity: Int64 = 10) async throws -> ServiceClient.Reply {
        try await client.post(service.url + op.path, json: BranchRequest(workerEventId: worker, productId: product, quantity: quantity), timeout: .seconds(10))
    }

    /// Calls until the answer is not a 503 (lock timeouts are the caller's to retry).
    func callUntilAnswered(_ op: BranchOperation, _ worker: Int64, product: Int64 = 1, quantity: Int64 = 10) async throws -> ServiceClient.Reply {
        while true {
            let reply = try await call(op, worker, product: product, quantity: quantity)
            if reply.status != 503 { return reply }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func stock(_ product: Int64 = 1) async throws -> Int64 {
        try await scalar(database, "SELECT stock FROM products WHERE id = \(product)")
    }

    func setStock(_ product: Int64, _ stock: Int64) async throws {
        _ = try await scalar(database, "UPDATE products SET stock = \(stock) WHERE id = \(product) RETURNING stock")
    }

    func rowStatus(_ worker: Int64, product: Int64 = 1) async throws -> String? {
        try await withDatabase(database) { connection in
            let rows = try await connection.query(
                "SELECT status FROM transactions WHERE worker_event_id = \(worker) AND product_id = \(product)", logger: TestPostgres.logger
            )
            for try await status in rows.decode(String.self) { return status }
            return nil
        }
    }

    func count(_ query: PostgresQuery) async throws -> Int64 { try await scalar(database, query) }

    /// Stock of every product, and the number of rows of each table: equal before and after a refused call.
    func snapshot() async throws -> String {
        try await withDatabase(database) { connection in
            var parts: [String] = []
            for try await (id, stock) in try await connection.query("SELECT id, stock FROM products ORDER BY id", logger: TestPostgres.logger)
                .decode((Int64, Int64).self)
            {
                parts.append("\(id):\(stock)")
            }
            for table in ["transactions", "barrier"] {
                for try await n in try await connection.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)"), logger: TestPostgres.logger)
                    .decode(Int64.self)
                {
                    parts.append("\(table)=\(n)")
                }
            }
            for try await n in try await connection.query("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()", logger: TestPostgres.logger)
                .decode(Int64.self)
            {
                parts.append("prepared=\(n)")
            }
            return parts.joined(separator: " ")
        }
    }
}

extension ServiceClient.Reply {
    var effect: BranchResponse.Effect? { (try? decode(BranchResponse.self))?.effect }
    var errorCode: String? { error?.code.rawValue }
}

/// The operations of one mode: origin, forward steps, undo.
struct ModeOps: Sendable, CustomTestStringConvertible {
    let mode: Mode
    let origin: BranchOperation
    let forward: [BranchOperation]
    let undo: BranchOperation

    static let all: [ModeOps] = [
        ModeOps(mode: .tcc, origin: .tccTry, forward: [.tccConfirm, .tccFinalize], undo: .tccCancel),
        ModeOps(mode: .saga, origin: .sagaReserve, forward: [.sagaConfirm], undo: .sagaCompensate),
        ModeOps(mode: .xa, origin: .xaPrepare, forward: [.xaCommit], undo: .xaRollback),
    ]

    var testDescription: String { mode.rawValue }
}
