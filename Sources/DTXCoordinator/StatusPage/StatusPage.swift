import DTXHTTP
import DTXProtocol
import Foundation
import HTTPTypes
import Hummingbird
import Mustache

/// The coordinator's status page at `GET /`: recent transactions with filters by status and mode, paging, and a page
/// per transaction with its branches; server-rendered HTML (Mustache templates compiled into the binary), no external
/// assets, refreshing itself. Off with `--no-ui`. Behind the same token as every route (the page takes it once as
/// `?token=`, then from a cookie: see `BearerTokenMiddleware`).
struct StatusPage: Sendable {
    let log: TransactionLog
    let instanceID: String
    let library: MustacheLibrary
    /// Seconds between refreshes.
    let refresh = 5
    let pageSize = 25

    init(log: TransactionLog, instanceID: String) throws {
        self.log = log
        self.instanceID = instanceID
        var library = MustacheLibrary()
        let templates: [(String, [UInt8])] = [
            ("layout", PackageResources.layout_mustache), ("transactions", PackageResources.transactions_mustache),
            ("transaction", PackageResources.transaction_mustache), ("message", PackageResources.message_mustache),
        ]
        for (name, bytes) in templates { try library.register(String(decoding: bytes, as: UTF8.self), named: name) }
        self.library = library
    }

    func add(to router: Router<DTXRequestContext>) {
        router.get("/") { request, _ in try await self.list(request) }
        router.get("/ui/transactions/:id") { _, context in
            guard let id = context.parameters.get("id", as: Int64.self) else { return self.message(.badRequest, "Not a transaction id", "Give a number.") }
            return try await self.transaction(id)
        }
    }

    /// A row of the list, as the template shows it.
    struct Row {
        var id: Int64, mode: String, status: String, phase: String, age: String, attempts: Int, error: String
    }

    struct Filter {
        var name: String, href: String, on: Bool
    }

    func list(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        var status: GlobalStatus?
        var mode: Mode?
        var cursor: Int64?
        if let text = query.get("status") {
            guard let parsed = GlobalStatus(rawValue: text) else { return message(.badRequest, "Unknown status", "Use pending, completed, failed or compensated.") }
            status = parsed
        }
        if let text = query.get("mode") {
            guard let parsed = Mode(rawValue: text) else { return message(.badRequest, "Unknown mode", "Use tcc, saga or xa.") }
            mode = parsed
        }
        if let text = query.get("cursor") {
            guard let parsed = Int64(text), parsed > 0 else { return message(.badRequest, "Bad cursor", "Use the page's links.") }
            cursor = parsed
        }
        let page: TransactionList
        let open: Int64
        do {
            page = try await log.list(status: status, mode: mode, limit: pageSize, cursor: cursor)
            open = try await log.openCount()
        } catch {
            return message(.serviceUnavailable, "The log does not answer", "\(error)")
        }
        func href(status: GlobalStatus?, mode: Mode?, cursor: String? = nil) -> String {
            let parts = [status.map { "status=\($0.rawValue)" }, mode.map { "mode=\($0.rawValue)" }, cursor.map { "cursor=\($0)" }].compactMap { $0 }
            return parts.isEmpty ? "/" : "/?" + parts.joined(separator: "&")
        }
        let now = Date()
        var context: [String: Any] = [
            "title": "dtx coordinator · transactions", "instance": instanceID, "now": Timestamp.string(now), "refresh": refresh,
            "open": open, "shown": page.transactions.count, "pageSize": pageSize,
            "filtered": status != nil || mode != nil,
            "statusFilters": [Filter(name: "all", href: href(status: nil, mode: mode), on: status == nil)]
                + GlobalStatus.allCases.map { Filter(name: $0.rawValue, href: href(status: $0, mode: mode), on: status == $0) },
            "modeFilters": [Filter(name: "all", href: href(status: status, mode: nil), on: mode == nil)]
                + Mode.allCases.map { Filter(name: $0.rawValue, href: href(status: status, mode: $0), on: mode == $0) },
            "hasRows": !page.transactions.isEmpty,
            "rows": page.transactions.map { view in
                Row(id: view.id, mode: view.mode.rawValue, status: view.status.rawValue, phase: view.phase,
                    age: Self.age(view.createdAt, now: now), attempts: view.attempts, error: view.errorMessage ?? "")
            },
        ]
        // absent keys, not nil values: a section renders for any value present
        if let next = page.next { context["older"] = href(status: status, mode: mode, cursor: next) }
        if cursor != nil { context["newer"] = href(status: status, mode: mode) }
        return html(library.render(context, withTemplate: "transactions") ?? "")
    }

    func transaction(_ id: Int64) async throws -> Response {
        let found: TransactionView?
        do {
            found = try await log.view(id: id)
        } catch {
            return message(.serviceUnavailable, "The log does not answer", "\(error)")
        }
        guard let view = found else { return message(.notFound, "No transaction \(id)", "It is not in the log (never began, or pruned).") }
        var context: [String: Any] = [
            "title": "dtx coordinator · transaction \(id)", "instance": instanceID, "now": Timestamp.string(Date()),
            "id": view.id, "mode": view.mode.rawValue, "status": view.status.rawValue, "phase": view.phase,
            "decision": view.decision?.rawValue ?? "not yet", "age": Self.age(view.createdAt, now: Date()), "createdAt": view.createdAt,
            "updatedAt": view.updatedAt, "attempts": view.attempts,
            "branches": view.branches.map { branch in
                ["participant": branch.participant, "productId": branch.productId, "quantity": branch.quantity,
                 "state": branch.state.rawValue, "attempts": branch.attempts, "lastError": branch.lastError ?? ""] as [String: Any]
            },
        ]
        // absent keys, not nil values: a section renders for any value present; an open transaction's page refreshes
        if let next = view.nextRetryAt {
            context["nextRetryAt"] = next
            context["refresh"] = refresh
        }
        if let error = view.errorMessage { context["error"] = error }
        return html(library.render(context, withTemplate: "transaction") ?? "")
    }

    func message(_ status: HTTPResponse.Status, _ heading: String, _ text: String) -> Response {
        let context: [String: Any] = ["title": "dtx coordinator · \(heading)", "instance": instanceID, "now": Timestamp.string(Date()),
                                      "heading": heading, "message": text]
        return html(library.render(context, withTemplate: "message") ?? "", status: status)
    }

    func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// "4 s", "12 min", "3 h", "2 d" since an RFC 3339 time.
    static func age(_ timestamp: String, now: Date) -> String {
        guard let date = try? Date(timestamp, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) else { return "" }
        let seconds = max(0, Int(now.timeIntervalSince(date)))
        switch seconds {
        case ..<120: return "\(seconds) s"
        case ..<7200: return "\(seconds / 60) min"
        case ..<172_800: return "\(seconds / 3600) h"
        default: return "\(seconds / 86400) d"
        }
    }
}
