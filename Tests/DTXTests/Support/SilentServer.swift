import NIOCore
import NIOPosix
import Synchronization

/// A TCP server that accepts connections and never answers (a coordinator cut off by the network, or hung), or
/// answers only `greeting` (say, an HTTP response head whose body never comes); it counts the connections it
/// accepted.
struct SilentServer: Sendable {
    final class Count: Sendable {
        let value = Mutex(0)
    }

    let channel: any Channel
    let accepted: Count

    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }
    func connections() -> Int { accepted.value.withLock { $0 } }

    static func start(greeting: String? = nil) async throws -> SilentServer {
        let accepted = Count()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                accepted.value.withLock { $0 += 1 }
                guard let greeting else { return child.eventLoop.makeSucceededVoidFuture() }
                return child.pipeline.addHandler(Greeter(greeting: greeting))
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return SilentServer(channel: channel, accepted: accepted)
    }
}

/// Writes its greeting once the connection is up, then reads and ignores everything.
private final class Greeter: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let greeting: String

    init(greeting: String) {
        self.greeting = greeting
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: greeting)), promise: nil)
        context.fireChannelActive()
    }
}
