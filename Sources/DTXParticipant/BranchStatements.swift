import Foundation
import PostgresNIO

/// The branch functions as prepared statements: parsed and planned once per connection, then only bound and executed
/// (PostgreSQL skips its parse and plan, PostgresNIO its describe), the cheapest way to call them.

/// `dtx_first_phase`: try, reserve (and XA prepare, between BEGIN and PREPARE TRANSACTION).
struct FirstPhaseStatement: PostgresPreparedStatement {
    static let name = "dtx_first_phase_v1"
    static let sql = "SELECT effect, status FROM dtx_first_phase($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    typealias Row = (String, String)

    var op: String
    var mode: String
    var rowStatus: String
    var gid: Int64
    var branch: Int64
    var quantity: Int64
    var service: String
    var lockTimeoutMilliseconds: Int32
    var notAfter: Date?
    var coordinator: String?
    var xaGID: String?

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 11)
        bindings.append(op)
        bindings.append(mode)
        bindings.append(rowStatus)
        bindings.append(gid)
        bindings.append(branch)
        bindings.append(quantity)
        bindings.append(service)
        bindings.append(lockTimeoutMilliseconds)
        bindings.append(notAfter)
        bindings.append(coordinator)
        bindings.append(xaGID)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// `dtx_advance` (confirm, finalize, saga confirm) and `dtx_undo` (cancel, compensate), over arrays of items.
struct SecondPhaseStatement<Function: SecondPhaseFunction>: PostgresPreparedStatement {
    static var name: String { Function.name }
    static var sql: String { Function.sql }
    typealias Row = (Int32, String, String?, String?)

    var op: String
    /// dtx_undo: the origin op; dtx_advance: the status moved from.
    var originOrFrom: String
    var gids: [Int64]
    var branches: [Int64]
    var set: [String]
    var to: String
    var lockTimeoutMilliseconds: Int32
    var skipLocked: Bool
    /// Each item's first-phase end as its request carried it ('' for none); dtx_undo writes it with the barrier rows
    /// of a null compensation (sql/participant/009), dtx_advance does not take it.
    var notAfters: [String] = []
    /// The mode of the operation: a branch of another mode is refused (`branch_conflict`, sql/participant/010).
    var mode: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 10)
        bindings.append(op)
        Function.bind(originOrFrom: originOrFrom, gids: gids, branches: branches, set: set, to: to, into: &bindings)
        bindings.append(lockTimeoutMilliseconds)
        bindings.append(skipLocked)
        if Function.takesNotAfter { bindings.append(notAfters) }
        bindings.append(mode)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// The argument order of one second-phase function.
protocol SecondPhaseFunction: Sendable {
    static var name: String { get }
    static var sql: String { get }
    static func bind(originOrFrom: String, gids: [Int64], branches: [Int64], set: [String], to: String, into bindings: inout PostgresBindings)
    /// Whether the function takes the items' `not_after` as its last argument.
    static var takesNotAfter: Bool { get }
}

/// `dtx_advance(op, gids, branches, from, to, done, lock_timeout, skip_locked, mode)` (sql/participant/010).
enum AdvanceFunction: SecondPhaseFunction {
    static let name = "dtx_advance_v2"
    static let takesNotAfter = false
    static let sql = "SELECT item, effect, status, refusal FROM dtx_advance($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    static func bind(originOrFrom: String, gids: [Int64], branches: [Int64], set: [String], to: String, into bindings: inout PostgresBindings) {
        bindings.append(gids)
        bindings.append(branches)
        bindings.append(originOrFrom)
        bindings.append(to)
        bindings.append(set)
    }
}

/// `dtx_undo(op, origin, gids, branches, undoable, to, lock_timeout, skip_locked, not_afters, mode)`
/// (sql/participant/010).
enum UndoFunction: SecondPhaseFunction {
    static let name = "dtx_undo_v3"
    static let sql = "SELECT item, effect, status, refusal FROM dtx_undo($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    static let takesNotAfter = true
    static func bind(originOrFrom: String, gids: [Int64], branches: [Int64], set: [String], to: String, into bindings: inout PostgresBindings) {
        bindings.append(originOrFrom)
        bindings.append(gids)
        bindings.append(branches)
        bindings.append(set)
        bindings.append(to)
    }
}

/// `dtx_confirm_finalize(gids, branches, lock_timeout, skip_locked)` (sql/participant/006): TCC confirm, then finalize
/// of every item that stands confirmed, in one statement.
struct ConfirmFinalizeStatement: PostgresPreparedStatement {
    static let name = "dtx_confirm_finalize_v1"
    static let sql = "SELECT item, effect, status, refusal FROM dtx_confirm_finalize($1, $2, $3, $4)"
    typealias Row = (Int32, String, String?, String?)

    var gids: [Int64]
    var branches: [Int64]
    var lockTimeoutMilliseconds: Int32
    var skipLocked: Bool

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(gids)
        bindings.append(branches)
        bindings.append(lockTimeoutMilliseconds)
        bindings.append(skipLocked)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}
