import DTXProtocol
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Answers a request that the HTTP parser refuses before its head is complete (headers over the decoder's 80 KiB, a
/// malformed request line) with 400 and the JSON error body every other refusal has. Hummingbird answers those with an
/// empty 400, which tells a client nothing. An error once a request is under way (a malformed chunk of its body) is
/// left to Hummingbird, which may be answering it already.
final class ParserErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// A request's head has arrived and its response has not ended.
    private var requestUnderWay = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { requestUnderWay = true }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { requestUnderWay = false }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, !requestUnderWay else {
            context.fireErrorCaught(error)
            return
        }
        let message = switch parserError {
        case .headerOverflow: "the request's headers are over 80 KiB"
        default: "the request is not valid HTTP/1.1 (\(parserError))"
        }
        let problem = ProtocolError.badRequest(message)
        let body = ByteBuffer(bytes: Array((try? WireJSON.encoder().encode(ErrorBody(error: problem))) ?? Data()))
        let head = HTTPResponse(
            status: .init(code: problem.httpStatus),
            headerFields: [.contentType: "application/json", .contentLength: "\(body.readableBytes)", .connection: "close"]
        )
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

extension ServerSettings {
    /// The HTTP/1.1 server configuration of every dtx service.
    public static var http1: HTTP1Channel.Configuration {
        .init(additionalChannelHandlers: [ParserErrorHandler()], idleTimeout: idleTimeout)
    }
}
