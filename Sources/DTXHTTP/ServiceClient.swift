import AsyncHTTPClient
import DTXProtocol
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import ServiceLifecycle

/// The HTTP client dtx services use to call each other: JSON in, status and JSON out, optional bearer token.
public struct ServiceClient: Sendable {
    public struct Configuration: Sendable {
        /// Connections per host: the AsyncHTTPClient default of 8 is far too low under load.
        public var maxConnectionsPerHost: Int = 256
        public var connectTimeout: Duration = .seconds(1)
        /// The longest an answer may go without a byte, its head or its body. A call's own timeout ends when the head
        /// arrives (AsyncHTTPClient's deadline): this bounds a peer that stalls after its head (a frozen process, a
        /// half-open connection), which would otherwise hold the call, and the request or recovery pass waiting on
        /// it, for ever. At no per-call cost: services set it to their longest call.
        public var readTimeout: Duration = .seconds(60)
        public var token: String?

        public init(token: String? = nil) {
            self.token = token
        }
    }

    /// A call's answer: the status and the raw body.
    public struct Reply: Sendable {
        public var status: Int
        public var body: Data
        /// The answer's headers (the value it shares with the response: no copy is made).
        public var headers: HTTPHeaders = [:]

        /// The first value of header `name` (case-insensitive).
        public func header(_ name: String) -> String? { headers.first(name: name) }

        public func decode<T: Decodable>(_ type: T.Type) throws -> T {
            try WireJSON.decoder().decode(type, from: body)
        }

        /// The error body, when there is one.
        public var error: ProtocolError? { try? WireJSON.decoder().decode(ErrorBody.self, from: body).error }
    }

    public let httpClient: HTTPClient
    public let token: String?

    public init(configuration: Configuration = .init()) {
        var http = HTTPClient.Configuration()
        http.connectionPool = .init(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.maxConnectionsPerHost
        )
        http.timeout.connect = .nanoseconds(configuration.connectTimeout.inNanoseconds)
        http.timeout.read = .nanoseconds(configuration.readTimeout.inNanoseconds)
        http.redirectConfiguration = .disallow
        self.httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
        self.token = configuration.token
    }

    public func post<Body: Encodable>(_ url: String, json body: Body, headers: [(String, String)] = [], timeout: Duration) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(data: try WireJSON.encoder().encode(body)))
        return try await self.send(request, timeout: timeout)
    }

    public func get(_ url: String, timeout: Duration) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        return try await self.send(request, timeout: timeout)
    }

    /// Any method, any body bytes, extra headers: for tools and tests that must send what a client should not.
    public func raw(
        _ method: String, _ url: String, body: Data? = nil, headers: [(String, String)] = [], timeout: Duration = .seconds(10)
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = .RAW(value: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(data: body)) }
        return try await self.send(request, timeout: timeout)
    }

    private func send(_ request: HTTPClientRequest, timeout: Duration) async throws -> Reply {
        var request = request
        if let token, !request.headers.contains(name: "authorization") {
            request.headers.add(name: "authorization", value: "Bearer \(token)")
        }
        let response = try await httpClient.execute(request, timeout: .nanoseconds(timeout.inNanoseconds))
        // (the deadline ends with the head; a body that stalls is bounded by the read timeout)
        let body = try await response.body.collect(upTo: 16 * 1024 * 1024)
        return Reply(status: Int(response.status.code), body: Data(buffer: body), headers: response.headers)
    }

    public func shutdown() async throws {
        try await httpClient.shutdown()
    }
}

/// Runs for the life of a ServiceGroup and shuts the client down when the group shuts down.
public struct ServiceClientLifecycle: Service {
    let client: ServiceClient

    public init(client: ServiceClient) {
        self.client = client
    }

    public func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
