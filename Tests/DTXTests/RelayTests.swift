import DTXBench
import DTXPostgres
import Foundation
import NIOCore
import NIOPosix
import Testing

/// The bench's delaying TCP relay, against an echo server: bytes and order kept, the delay it adds, closes passed on,
/// partitions, and the `dtx relay` process leaving nothing behind.
/// Serialized: a port a cut frees could be taken by another test's relay meanwhile.
@Suite("Relay", .serialized)
struct RelayTests {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    /// An echo server on a free port; stops with the returned task's cancellation.
    static func echoServer() async throws -> (port: Int, task: Task<Void, Never>) {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: channel) }
            }
        let port = server.channel.localAddress!.port!
        let task = Task<Void, Never> {
            _ = try? await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask {
                            try? await connection.executeThenClose { inbound, outbound in
                                for try await chunk in inbound { try await outbound.write(chunk) }
                            }
                        }
                    }
                }
            }
        }
        return (port, task)
    }

    static func connect(_ port: Int) async throws -> Connection {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: channel) }
        }
    }

    /// Whether a connection to `port` is refused (one that is made is closed again).
    static func refused(_ port: Int) async -> Bool {
        guard let connection = try? await connect(port) else { return true }
        try? await connection.executeThenClose { _, _ in }
        return false
    }

    /// Sends `bytes` and reads until as many came back (or the connection ends).
    static func roundTrip(_ connection: Connection, _ bytes: [UInt8]) async throws -> [UInt8] {
        try await connection.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: bytes))
            var received: [UInt8] = []
            for try await chunk in inbound {
                received += chunk.readableBytesView
                if received.count >= bytes.count { break }
            }
            return received
        }
    }

    @Test("bytes unchanged and in order, both ways, and the round trip is at least the RTT")
    func orderAndDelay() async throws {
        let echo = try await Self.echoServer()
        defer { echo.task.cancel() }
        let relay = Relay(links: [.init(name: "echo", targetPort: echo.port)], rtt: .milliseconds(40), logger: TestPostgres.logger)
        let port = try await relay.start()["echo"]!
        // a megabyte in one write: it arrives in many chunks, each delayed, none reordered
        let payload = (0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) }
        #expect(try await Self.roundTrip(try await Self.connect(port), payload) == payload)
        // one small message: out and back through the relay, so at least one RTT, and not much more. The fastest of
        // five, so that a loaded machine's stalls do not count. (No comparison with a direct round trip: on a loaded
        // 2-core machine a direct one took 140 ms; the floor alone shows the relay holds each chunk.)
        func fastest(_ port: Int) async throws -> Duration {
            var best = Duration.seconds(3600)
            for _ in 0..<5 {
                let connection = try await Self.connect(port)
                let start = ContinuousClock.now
                #expect(try await Self.roundTrip(connection, [1, 2, 3]) == [1, 2, 3])
                best = min(best, ContinuousClock.now - start)
            }
            return best
        }
        let relayed = try await fastest(port)
        #expect(relayed >= .milliseconds(40), "\(relayed)")
        #expect(relayed < .milliseconds(40 + 1000), "\(relayed)")
        await relay.stop()
    }

    @Test("a close on either side closes the other")
    func closes() async throws {
        // a target that answers one chunk and then closes, and tells when a connection of its ended
        let (ends, ended) = AsyncStream.makeStream(of: Void.self)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: channel) }
            }
        let target = Task<Void, Never> {
            _ = try? await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask {
                            try? await connection.executeThenClose { inbound, outbound in
                                for try await chunk in inbound {
                                    if chunk.readableBytesView.first == 0 { break }  // 0: close from this side
                                    try await outbound.write(chunk)
                                }
                            }
                            ended.yield()
                        }
                    }
                }
            }
        }
        defer { target.cancel() }
        let relay = Relay(links: [.init(name: "target", targetPort: server.channel.localAddress!.port!)], rtt: .milliseconds(10), logger: TestPostgres.logger)
        let port = try await relay.start()["target"]!
        var endings = ends.makeAsyncIterator()
        // the client closes: the target's side ends
        #expect(try await Self.roundTrip(try await Self.connect(port), [7]) == [7])
        #expect(await endings.next() != nil)
        // the target closes: the client's reads end instead of hanging
        let clientSawEnd = try await Self.connect(port).executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: [0]))
            for try await _ in inbound {}
            return true
        }
        #expect(clientSawEnd)
        #expect(await endings.next() != nil)
        await relay.stop()
    }

    @Test("cut: new connections refused, open ones stalled without loss; heal: delivered, and connections accepted again")
    func partition() async throws {
        let echo = try await Self.echoServer()
        defer { echo.task.cancel() }
        let relay = Relay(links: [.init(name: "echo", targetPort: echo.port)], rtt: .milliseconds(2), logger: TestPostgres.logger)
        let port = try await relay.start()["echo"]!
        try await Self.connect(port).executeThenClose { inbound, outbound in
            var answers = inbound.makeAsyncIterator()
            try await outbound.write(ByteBuffer(bytes: [1]))
            #expect(try await answers.next().map { Array($0.readableBytesView) } == [1])  // through the relay, open
            try await relay.cut("echo")
            #expect(await Self.refused(port))
            let sent = ContinuousClock.now
            try await outbound.write(ByteBuffer(bytes: [9, 8, 7]))
            try await Task.sleep(for: .milliseconds(300))
            try await relay.heal("echo")
            var received: [UInt8] = []
            while received.count < 3, let chunk = try await answers.next() { received += chunk.readableBytesView }
            #expect(received == [9, 8, 7])
            #expect(ContinuousClock.now - sent >= .milliseconds(300))  // held while cut, delivered after
        }
        #expect(try await Self.roundTrip(try await Self.connect(port), [5]) == [5])
        await relay.stop()
    }

    @Test("dtx relay: serves its links, ends at the end of its standard input, and a failed start exits with a message")
    func process() async throws {
        let echo = try await Self.echoServer()
        defer { echo.task.cancel() }
        let port = try EmbeddedPostgres.freePort()
        let log = "/tmp/dtx-test-\(getpid())-relay.log"
        // a fraction of a millisecond, as the bench passes it (its --rtt takes microseconds; this used to be refused)
        let relay = try ChildProcess.spawn(
            name: "relay", executable: try dtxExecutable(), arguments: ["relay", "--rtt", "0.5ms", "--link", "echo=\(port):127.0.0.1:\(echo.port)"],
            logPath: log, controlled: true
        )
        try await eventually("the relay listens") { relay.logTail().contains("relay echo 127.0.0.1:\(port)") }
        #expect(try await Self.roundTrip(try await Self.connect(port), [4, 2]) == [4, 2])
        try relay.send("cut echo")
        try await eventually("the cut is done") { relay.logTail().contains("ok cut echo") }
        #expect(await Self.refused(port))
        relay.closeControl()
        #expect(await relay.wait(timeout: .seconds(10)) == 0)
        // its port taken: it says so and exits
        let second = try ChildProcess.spawn(
            name: "relay2", executable: try dtxExecutable(), arguments: ["relay", "--rtt", "4ms", "--link", "echo=\(echo.port):127.0.0.1:1"],
            logPath: log + ".2", controlled: true
        )
        let status = await second.wait(timeout: .seconds(10))
        #expect(status != nil && status != 0)
        #expect(second.logTail().lowercased().contains("address already in use") || second.logTail().contains("Error"))
    }
}
