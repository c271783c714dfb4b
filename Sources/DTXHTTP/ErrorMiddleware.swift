import DTXProtocol
import Hummingbird
import Logging

/// Renders every error as the JSON error body `{"error": {"code", "message"}}`, in one place.
///
/// A request for a known path with the wrong method gets 405 (the router alone would say 404).
public struct ErrorMiddleware: RouterMiddleware {
    public typealias Context = DTXRequestContext
    let knownPaths: Set<String>

    /// `knownPaths`: the fixed paths the router serves, so that a wrong method on one of them is told apart from an
    /// unknown path.
    public init(knownPaths: Set<String>) {
        self.knownPaths = knownPaths
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
            return .error(self.protocolError(for: error, request: request))
        } catch let error as any HTTPResponseError {
            return .error(self.protocolError(status: error.status, message: nil, request: request))
        } catch {
            context.logger.error("request failed", metadata: ["dtx.error": "\(String(reflecting: error))"])
            return .error(ProtocolError(.internalError, "internal error: \(error)"))
        }
    }

    private func protocolError(for error: HTTPError, request: Request) -> ProtocolError {
        self.protocolError(status: error.status, message: error.body, request: request)
    }

    private func protocolError(status: HTTPResponse.Status, message: String?, request: Request) -> ProtocolError {
        switch status {
        case .notFound:
            if knownPaths.contains(request.uri.path) {
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

/// When a token is configured, every request must carry `Authorization: Bearer <token>`; others get 401.
public struct BearerTokenMiddleware: RouterMiddleware {
    public typealias Context = DTXRequestContext
    let expected: String

    public init(token: String) {
        self.expected = "Bearer " + token
    }

    public func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let header = request.headers[.authorization], constantTimeEquals(header, expected) else {
            throw ProtocolError(.unauthorized, "missing or wrong bearer token: send Authorization: Bearer <token>")
        }
        return try await next(request, context)
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
