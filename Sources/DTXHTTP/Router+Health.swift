import DTXPostgres
import DTXProtocol
import Hummingbird

extension Router where Context == DTXRequestContext {
    /// `GET /health`: `body` with 200 when `check` (a trivial database query) succeeds within 2 s, else 503
    /// `database_unavailable`. The deadline does not wait for a pool that hangs on a server that is down.
    /// `HEAD /health` answers the same status without the body (load balancers and `curl -I` probe with HEAD).
    public func addHealthRoute<Body: Encodable & Sendable>(_ body: Body, check: @escaping @Sendable () async throws -> Void) {
        let respond: @Sendable () async -> Response = {
            do {
                try await withDeadline(.seconds(2)) { try await check() }
                return try .wire(body)
            } catch {
                return .error(ProtocolError(.databaseUnavailable, "database not reachable: \(error)"))
            }
        }
        self.get("/health") { _, _ -> Response in await respond() }
        self.head("/health") { _, _ -> Response in
            let full = await respond()
            return Response(status: full.status, headers: full.headers)
        }
    }
}
