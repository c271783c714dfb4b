import DTXProtocol
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOFoundationCompat

/// The HTTP server settings every dtx service shares.
public enum ServerSettings {
    /// A connection with nothing to read for this long is closed: one that sends half a request and stops (or that
    /// many hold open) would otherwise keep its descriptor for ever. Above the clients' own pool idle time (60 s, see
    /// `ServiceClient`), so that a client closes an idle connection before the server does under it.
    public static let idleTimeout: TimeAmount = .seconds(75)
}

/// The request context of every dtx service: bodies over 64 KiB are refused with 413.
public struct DTXRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    public var maxUploadSize: Int { Limits.maxBodyBytes }
}

extension Request {
    /// Reads the body (at most `Limits.maxBodyBytes`) and decodes it with the wire protocol's JSON rules.
    public func decodeWire<T: Decodable>(_ type: T.Type, context: DTXRequestContext) async throws -> T {
        try WireJSON.decode(type, from: try await collectWire(context: context))
    }

    /// The calling coordinator's base URL (`dtx-coordinator` header), when it is an http(s) URL; other values are
    /// ignored (the header only tells the reconciler whom to ask).
    public var coordinatorURL: String? {
        CoordinatorHeader.validated(self.headers[HTTPField.Name(CoordinatorHeader.name)!])
    }

    /// Reads the body, at most `Limits.maxBodyBytes`. A body whose Content-Type says it is something else than JSON
    /// is refused (415): a form or a text body is what a page of another site can make a browser send here without a
    /// CORS preflight, so taking it as JSON would let any page the operator opens start transactions.
    public func collectWire(context: DTXRequestContext) async throws -> Data {
        if let type = self.headers[.contentType], !Self.isJSON(type) {
            throw ProtocolError(.unsupportedMediaType, "the body must be JSON: send Content-Type: application/json, not '\(type.prefix(100))'")
        }
        return Data(buffer: try await self.body.collect(upTo: context.maxUploadSize))
    }

    /// `application/json` or `application/<something>+json`, with any parameters (`; charset=utf-8`).
    static func isJSON(_ contentType: String) -> Bool {
        let type = contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        return type == "application/json" || (type.hasPrefix("application/") && type.hasSuffix("+json"))
    }

    /// An integer query parameter; a missing or malformed one is a 400 that names it.
    public func queryInteger(_ name: String) throws(ProtocolError) -> Int64 {
        guard let text = self.uri.queryParameters.get(name) else { throw .badRequest("query parameter '\(name)' is missing") }
        guard let value = Int64(text) else { throw .badRequest("query parameter '\(name)' must be an integer") }
        return value
    }

    /// An optional `true`/`false` query parameter; absent is `false`.
    public func queryFlag(_ name: String) throws(ProtocolError) -> Bool {
        switch self.uri.queryParameters.get(name) {
        case nil, "false": return false
        case "true": return true
        default: throw .badRequest("query parameter '\(name)' must be true or false")
        }
    }
}

extension Response {
    /// A JSON response encoded with the wire protocol's rules.
    public static func wire<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try WireJSON.encoder().encode(value)
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    /// The JSON error body for `error`, with the status that goes with its code.
    public static func error(_ error: ProtocolError) -> Response {
        let data = (try? WireJSON.encoder().encode(ErrorBody(error: error))) ?? Data()
        var response = Response(
            status: .init(code: error.httpStatus),
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
        // RFC 6750: a 401 says which scheme it wants
        if error.code == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer realm=\"dtx\"" }
        return response
    }
}

