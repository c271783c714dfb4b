import DTXProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A TCP relay that puts a network between two parts on one machine: every chunk read on one side is written to the
/// other after half the round-trip time, in order, in both directions, so the round trip through it is `rtt`. Kernel
/// traffic shaping (netem) is not available here and needs root elsewhere; this needs no privileges.
///
/// Each link listens on its own port and forwards to one target. `cut` partitions a link: new connections are
/// refused (its listener is closed) and connections already open are stalled (what they carry is held, not lost);
/// `heal` listens again on the same port and delivers what was held. When either side of a connection closes, the
/// other is closed once what was in flight before has been delivered.
public final class Relay: Sendable {
    public struct Link: Sendable, Hashable {
        public var name: String
        /// 0: a free port.
        public var listenPort: Int
        public var targetHost: String
        public var targetPort: Int

        public init(name: String, listenPort: Int = 0, targetHost: String = "127.0.0.1", targetPort: Int) {
            self.name = name
            self.listenPort = listenPort
            self.targetHost = targetHost
            self.targetPort = targetPort
        }
    }

    public let rtt: Duration
    let group: any EventLoopGroup
    let logger: Logger
    private let links: [String: LinkState]

    public init(links: [Link], rtt: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.rtt = rtt
        self.group = group
        self.logger = logger
        self.links = Dictionary(uniqueKeysWithValues: links.map { ($0.name, LinkState(link: $0)) })
    }

    /// One way: half the round trip.
    var delay: TimeAmount { .nanoseconds(rtt.inNanoseconds / 2) }

    /// Starts every link's listener; returns the port each listens on, by link name.
    @discardableResult
    public func start() async throws -> [String: Int] {
        var ports: [String: Int] = [:]
        do {
            for (name, state) in links {
                ports[name] = try await listen(state)
            }
        } catch {
            await stop()
            throw error
        }
        return ports
    }

    /// The port a link listens on (once started).
    public func port(_ name: String) -> Int? { links[name]?.port.withLock { $0 } }

    public var linkNames: [String] { Array(links.keys).sorted() }

    /// Partitions a link: refuses new connections and stalls the open ones until `heal`.
    public func cut(_ name: String) async throws {
        guard let state = links[name] else { throw RelayError("no link \(name)") }
        state.cut.withLock { $0 = true }
        try? await state.server.withLock({ $0 })?.close()
        state.server.withLock { $0 = nil }
    }

    /// Ends a partition: listens again on the same port and delivers what was held.
    public func heal(_ name: String) async throws {
        guard let state = links[name] else { throw RelayError("no link \(name)") }
        state.cut.withLock { $0 = false }
        _ = try await listen(state)
        for pair in state.pairs.withLock({ Array($0.values) }) {
            pair.eventLoop.execute { pair.value.resume() }
        }
    }

    /// Closes every listener and every connection.
    public func stop() async {
        for state in links.values {
            state.cut.withLock { $0 = true }
            try? await state.server.withLock({ $0 })?.close()
            state.server.withLock { $0 = nil }
            for pair in state.pairs.withLock({ Array($0.values) }) {
                pair.eventLoop.execute { pair.value.closeBoth() }
            }
        }
    }

    private func listen(_ state: LinkState) async throws -> Int {
        let link = state.link
        let wanted = state.port.withLock { $0 } ?? link.listenPort
        let delay = self.delay
        let logger = self.logger
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { inbound in
                Relay.connect(inbound, link: state, delay: delay, logger: logger)
            }
            .bind(host: "127.0.0.1", port: wanted)
            .get()
        let port = channel.localAddress?.port ?? wanted
        state.port.withLock { $0 = port }
        state.server.withLock { $0 = channel }
        return port
    }

    /// Connects the accepted channel to the link's target and glues the two together through delay queues.
    private static func connect(_ inbound: any Channel, link state: LinkState, delay: TimeAmount, logger: Logger) -> EventLoopFuture<Void> {
        let loop = inbound.eventLoop
        let target = state.link
        return ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            .connect(host: target.targetHost, port: target.targetPort)
            .flatMap { outbound in
                let pair = RelayPair(inbound: inbound, outbound: outbound, delay: delay, isCut: { state.cut.withLock { $0 } })
                let id = ObjectIdentifier(pair)
                state.pairs.withLock { $0[id] = NIOLoopBound(pair, eventLoop: loop) }
                pair.onClose = { state.pairs.withLock { _ = $0.removeValue(forKey: id) } }
                do {
                    try inbound.pipeline.syncOperations.addHandler(RelaySide(pair: pair, isInbound: true))
                    try outbound.pipeline.syncOperations.addHandler(RelaySide(pair: pair, isInbound: false))
                } catch {
                    pair.closeBoth()
                    return loop.makeFailedFuture(error)
                }
                return loop.makeSucceededVoidFuture()
            }
            .flatMapErrorThrowing { error in
                logger.debug("relay could not reach its target", metadata: ["dtx.link": "\(target.name)", "dtx.error": "\(error)"])
                inbound.close(promise: nil)
                throw error
            }
    }
}

public struct RelayError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A link's listener, port, partition flag and open connections.
private final class LinkState: Sendable {
    let link: Relay.Link
    let port = Mutex<Int?>(nil)
    let server = Mutex<(any Channel)?>(nil)
    let cut = Mutex(false)
    let pairs = Mutex<[ObjectIdentifier: NIOLoopBound<RelayPair>]>([:])

    init(link: Relay.Link) { self.link = link }
}

/// One relayed connection: two channels on one event loop, and a delay queue per direction. Lives on that loop only.
final class RelayPair {
    /// What waits to be delivered to one side: chunks with their delivery time, then perhaps the close of that side.
    final class Direction {
        let target: any Channel
        var queue = CircularBuffer<(at: NIODeadline, data: ByteBuffer)>()
        var closeAfterQueue = false
        var timer: Scheduled<Void>?

        init(target: any Channel) { self.target = target }
    }

    let inbound: any Channel
    let outbound: any Channel
    let delay: TimeAmount
    let isCut: () -> Bool
    let toOutbound: Direction
    let toInbound: Direction
    var closed = false
    var onClose: (() -> Void)?

    init(inbound: any Channel, outbound: any Channel, delay: TimeAmount, isCut: @escaping () -> Bool) {
        self.inbound = inbound
        self.outbound = outbound
        self.delay = delay
        self.isCut = isCut
        self.toOutbound = Direction(target: outbound)
        self.toInbound = Direction(target: inbound)
    }

    /// A chunk read on one side, to be written to the other after the delay.
    func received(_ data: ByteBuffer, fromInbound: Bool) {
        let direction = fromInbound ? toOutbound : toInbound
        direction.queue.append((.now() + delay, data))
        schedule(direction)
    }

    /// One side closed: close the other once what it sent before has been delivered.
    func sideClosed(inbound wasInbound: Bool) {
        let direction = wasInbound ? toOutbound : toInbound
        direction.closeAfterQueue = true
        schedule(direction)
    }

    private func schedule(_ direction: Direction) {
        guard direction.timer == nil, !closed else { return }
        let at = direction.queue.first?.at ?? .now()
        // the pair lives on this loop, where the task runs: the bound value says so to the compiler (and checks it)
        let bound = NIOLoopBound((pair: self, direction: direction), eventLoop: direction.target.eventLoop)
        direction.timer = direction.target.eventLoop.scheduleTask(deadline: at) {
            bound.value.direction.timer = nil
            bound.value.pair.deliver(bound.value.direction)
        }
    }

    private func deliver(_ direction: Direction) {
        guard !closed, !isCut() else { return }  // stalled by a partition: `resume` picks it up
        let now = NIODeadline.now()
        var wrote = false
        while let first = direction.queue.first, first.at <= now {
            direction.target.write(first.data, promise: nil)
            direction.queue.removeFirst()
            wrote = true
        }
        if wrote { direction.target.flush() }
        if !direction.queue.isEmpty {
            schedule(direction)
        } else if direction.closeAfterQueue {
            closeBoth()
        }
    }

    /// After a partition healed: deliver what was held.
    func resume() {
        schedule(toOutbound)
        schedule(toInbound)
    }

    func closeBoth() {
        guard !closed else { return }
        closed = true
        toOutbound.timer?.cancel()
        toInbound.timer?.cancel()
        inbound.close(promise: nil)
        outbound.close(promise: nil)
        onClose?()
    }
}

/// The handler on each of a pair's channels: hands reads and closes to the pair.
final class RelaySide: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let pair: RelayPair
    let isInbound: Bool

    init(pair: RelayPair, isInbound: Bool) {
        self.pair = pair
        self.isInbound = isInbound
    }

    // Reading starts once the channel is active (the accepted one is registered after its initializer ran).
    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { context.read() }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.read()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pair.received(unwrapInboundIn(data), fromInbound: isInbound)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pair.sideClosed(inbound: isInbound)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
