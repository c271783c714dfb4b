import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO

/// The log's writes of many transactions in one statement each (`dtx_begin_many`, `dtx_record_many`), as prepared
/// statements; a failed statement fails each of its items.
struct LogWriter: Sendable {
    let client: PostgresClient
    let owner: String
    let holder: Int64
    let lease: Duration
    let globalTimeout: Duration
    let callTimeout: Duration
    let logger: Logger

    func begin(_ items: [BeginStatement.Item]) async -> [Result<BeginStatement.Row, any Error>] {
        await each(items.count) { [self] in
            let statement = BeginStatement(
                items: items, timeoutSeconds: globalTimeout.inSeconds, owner: owner, holder: holder, leaseSeconds: lease.inSeconds
            )
            // one row per item, in item order (sorted by item number all the same: the order is the function's promise)
            return try await client.rows(statement, logger: logger).sorted { $0.0 < $1.0 }
        }
    }

    func record(_ items: [RecordStatement.Item], durable: Bool) async -> [Result<Bool, any Error>] {
        await each(items.count) { [self] in
            let statement = RecordStatement(items: items, leaseSeconds: lease.inSeconds, durable: durable)
            return try await client.rows(statement, logger: logger).sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    /// One result per item: the statement's rows, or its error for every item (also when it does not end within
    /// `callTimeout`).
    private func each<Row: Sendable>(_ count: Int, _ body: @escaping @Sendable () async throws -> [Row]) async -> [Result<Row, any Error>] {
        do {
            let rows = try await withDeadline(callTimeout, body)
            guard rows.count == count else { throw CoordinatorError.logWriteFailed("\(rows.count) rows for \(count) items") }
            return rows.map { .success($0) }
        } catch {
            return Array(repeating: .failure(error), count: count)
        }
    }
}

/// `dtx_begin_many`.
struct BeginStatement: PostgresPreparedStatement {
    struct Item: Sendable {
        var id: Int64
        var mode: String
        var phase: String
        var request: String
        var branches: String
        var idempotencyKey: String?
    }

    static let name = "dtx_begin_many_v3"
    /// The last column is the time left to the first phase's end by the log server's clock (`now()` is when the
    /// statement began; subtracted as numbers, since PostgreSQL 15 cannot subtract an infinite timestamp): the driver counts its deadline on its own clock from that, never from `deadline_at` against
    /// its own wall clock, which may differ from the server's.
    static let sql = """
        SELECT item, created, same_request, id, status, mode, phase, error_message, branches, deadline_at, attempts, created_at, lease_epoch,
               extract(epoch FROM deadline_at)::float8 - extract(epoch FROM now())::float8
        FROM dtx_begin_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        """
    typealias Row = (Int32, Bool, Bool, Int64, String, String, String, String?, String, Date, Int32, Date, Int64, Double)

    var items: [Item]
    var timeoutSeconds: Double
    var owner: String
    var holder: Int64
    var leaseSeconds: Double

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 10)
        bindings.append(items.map(\.id))
        bindings.append(items.map(\.mode))
        bindings.append(items.map(\.phase))
        bindings.append(items.map(\.request))
        bindings.append(items.map(\.branches))
        bindings.append(timeoutSeconds)
        bindings.append(owner)
        bindings.append(holder)
        bindings.append(leaseSeconds)
        bindings.append(items.map { $0.idempotencyKey ?? "" })  // PostgresNIO sends no NULL in arrays: '' is none
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// `dtx_record_many`.
struct RecordStatement: PostgresPreparedStatement {
    struct Item: Sendable {
        var id: Int64
        var epoch: Int64
        var expectedPhase: String
        var status: String
        var phase: String
        var error: String?
        var branches: String
        var release: Bool
    }

    static let name = "dtx_record_many_v1"
    static let sql = "SELECT item, written FROM dtx_record_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    typealias Row = (Int32, Bool)

    var items: [Item]
    var leaseSeconds: Double
    var durable: Bool

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 10)
        bindings.append(items.map(\.id))
        bindings.append(items.map(\.epoch))
        bindings.append(items.map(\.expectedPhase))
        bindings.append(items.map(\.status))
        bindings.append(items.map(\.phase))
        bindings.append(items.map { $0.error ?? "" })  // PostgresNIO sends no NULL in arrays: '' is none
        bindings.append(items.map(\.branches))
        bindings.append(items.map(\.release))
        bindings.append(leaseSeconds)
        bindings.append(durable)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}
