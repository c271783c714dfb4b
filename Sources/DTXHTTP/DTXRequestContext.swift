import DTXProtocol
import Foundation
import HTTPTypes
import Hummingbird
import NIOFoundationCompat

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

    /// Reads the body, at most `Limits.maxBodyBytes`.
    public func collectWire(context: DTXRequestContext) async throws -> Data {
        Data(buffer: try await self.body.collect(upTo: context.maxUploadSize))
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
        return Response(
            status: .init(code: error.httpStatus),
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }
}

