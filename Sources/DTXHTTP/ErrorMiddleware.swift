import DTXPostgres
import DTXProtocol
import Hummingbird
import Logging
import Synchronization

/// The routes a router serves, as method and path pattern, filled once every route is added: so that the error
/// middleware (added before the routes) can tell a wrong method on a served path (405, with `Allow`) from a path that
/// is not served (404).
public final class RouteTable: Sendable {
    private let routes = Mutex<[(method: String, pattern: [Substring])]>([])

    public init() {}

    /// Takes the router's routes (call after the last route is added).
    public func fill(_ router: Router<DTXRequestContext>) {
        let entries = router.routes.map { (method: $0.method.rawValue, pattern: $0.path.description.split(separator: "/")) }
        routes.withLock { $0 = entries }
    }

    /// "METHOD /path/{param}" for every route, in the OpenAPI form of its path.
    public var described: [String] {
        routes.withLock { $0.map { "\($0.method) /" + $0.pattern.map { Self.isCapture($0) ? "{\(Self.captureName($0))}" : String($0) }.joined(separator: "/") } }
    }

    /// A path parameter, written `:name` or `{name}`.
    static func isCapture(_ segment: Substring) -> Bool { segment.hasPrefix(":") || (segment.hasPrefix("{") && segment.hasSuffix("}")) }
    static func captureName(_ segment: Substring) -> Substring { segment.hasPrefix(":") ? segment.dropFirst() : segment.dropFirst().dropLast() }

    /// The methods served on `path` (empty when none is).
    public func methods(for path: String) -> [String] {
        let segments = path.split(separator: "/")
        return routes.withLock { routes in
            Array(Set(routes.filter { Self.matches($0.pattern, segments) }.map(\.method))).sorted()
        }
    }

    static func matches(_ pattern: [Substring], _ segments: [Substring]) -> Bool {
        if pattern.last == "**" { return segments.count >= pattern.count - 1 && zip(pattern.dropLast(), segments).allSatisfy(segmentMatches) }
        return pattern.count == segments.count && zip(pattern, segments).allSatisfy(segmentMatches)
    }

    static func segmentMatches(_ pattern: Substring, _ segment: Substring) -> Bool {
        pattern == segment || isCapture(pattern) || pattern == "*"
    }
}

/// Renders every error as the JSON error body `{"error": {"code", "message"}}`, in one place.
///
/// A request for a served path with the wrong method gets 405 with an `Allow` header (the router alone would say 404).
public struct ErrorMiddleware: RouterMiddleware {
    public typealias Context = DTXRequestContext
    let routes: RouteTable

    public init(routes: RouteTable) {
        self.routes = routes
    }

    public func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ProtocolError {
            return .error(error)
        } catch let error as HTTPError {
            return self.response(self.protocolError(for: error, request: request), request: request)
        } catch let error as any HTTPResponseError {
            return self.response(self.protocolError(status: error.status, message: nil, request: request), request: request)
        } catch where error.isDatabaseFailure {
            context.logger.warning("request failed on the database", metadata: ["dtx.error": "\(error.logDescription)"])
            return .error(ProtocolError(.databaseUnavailable, "the database failed or did not answer: retry (\(error.postgresMessage))"))
        } catch {
            context.logger.error("request failed", metadata: ["dtx.error": "\(String(reflecting: error))"])
            return .error(ProtocolError(.internalError, "internal error: \(error)"))
        }
    }

    /// The error's response; a 405 says which methods the path takes.
    private func response(_ error: ProtocolError, request: Request) -> Response {
        var response = Response.error(error)
        if error.code == .methodNotAllowed {
            response.headers[.allow] = routes.methods(for: request.uri.path).joined(separator: ", ")
        }
        return response
    }

    private func protocolError(for error: HTTPError, request: Request) -> ProtocolError {
        self.protocolError(status: error.status, message: error.body, request: request)
    }

    private func protocolError(status: HTTPResponse.Status, message: String?, request: Request) -> ProtocolError {
        switch status {
        case .notFound:
            if !routes.methods(for: request.uri.path).isEmpty {
                return ProtocolError(.methodNotAllowed, "\(request.method) is not allowed on \(request.uri.path)")
            }
            return ProtocolError(.notFound, message ?? "no route for \(request.method) \(request.uri.path)")
        case .contentTooLarge:
            return ProtocolError(.bodyTooLarge, "the request body is larger than \(Limits.maxBodyBytes) bytes")
        case .badRequest:
            return .badRequest(message ?? "bad request")
        case .unauthorized:
            return ProtocolError(.unauthorized, message ?? "missing or wrong bearer token")
        case .methodNotAllowed:
            return ProtocolError(.methodNotAllowed, message ?? "\(request.method) is not allowed on \(request.uri.path)")
        default:
            return ProtocolError(.internalError, message ?? "HTTP \(status.code) \(status.reasonPhrase)")
        }
    }
}

/// When a token is configured, every request must carry it; others get 401. Clients send `Authorization: Bearer
/// <token>`; a browser (the status page) opens `/?token=<token>` once, is given the token as an HttpOnly cookie, and
/// is sent on to the page without it in the address.
public struct BearerTokenMiddleware: RouterMiddleware {
    public typealias Context = DTXRequestContext
    static let cookie = "dtx_token"
    let token: String

    public init(token: String) {
        self.token = token
    }

    public func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        // the scheme's name is case-insensitive (RFC 9110), the token is not
        if let header = request.headers[.authorization], let space = header.firstIndex(of: " "),
           header[..<space].lowercased() == "bearer",
           constantTimeEquals(header[header.index(after: space)...].trimmingCharacters(in: .whitespaces), token) {
            return try await next(request, context)
        }
        // the health check is open, as the documents say: a liveness probe carries no token (it tells nothing but "up")
        if request.method == .get || request.method == .head, request.uri.path == "/health" {
            return try await next(request, context)
        }
        // the cookie (the status page's) only reads: a page of another site can make a browser send it with a POST
        if request.method == .get, let cookies = request.headers[.cookie], cookies.split(separator: ";").contains(where: { part in
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            return pair.count == 2 && pair[0] == Self.cookie && constantTimeEquals(String(pair[1]), token)
        }) {
            return try await next(request, context)
        }
        // one leading slash: "//host/..." (or "/\host/...", which browsers read the same) would send the browser to
        // another site
        let path = "/" + request.uri.path.drop { $0 == "/" || $0 == "\\" }
        // the sign-in link is for the status page's pages only, as the documents say; the API takes the header
        if request.method == .get, path == "/" || path.hasPrefix("/ui/"),
           let given = request.uri.queryParameters.get("token"), constantTimeEquals(given, token) {
            // the same page without the token (kept out of the address bar and history), its filters kept as sent
            let kept = (request.uri.query ?? "").split(separator: "&").filter { !$0.hasPrefix("token=") && $0 != "token" }
            let location = path + (kept.isEmpty ? "" : "?" + kept.joined(separator: "&"))
            var response = Response(status: .seeOther, headers: [.location: location])
            response.headers[.setCookie] = "\(Self.cookie)=\(token); Path=/; HttpOnly; SameSite=Strict"
            return response
        }
        throw ProtocolError(.unauthorized, "missing or wrong bearer token: send Authorization: Bearer <token>")
    }
}

/// Compares without an early exit, so the time taken does not tell how much of the token matched.
func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    var difference = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return difference == 0
}
