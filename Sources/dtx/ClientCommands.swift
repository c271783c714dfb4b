import ArgumentParser
import DTXBench
import DTXHTTP
import DTXProtocol
import Foundation

struct ClientOptions: ParsableArguments {
    @Option(help: "The coordinator's base URL.") var coordinator: String = "http://127.0.0.1:8090"
    @Option(help: "Bearer token (or DTX_TOKEN).") var token: String?

    var base: String { coordinator.hasSuffix("/") ? String(coordinator.dropLast()) : coordinator }

    func validate() throws {
        guard let url = URL(string: coordinator), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host?.isEmpty == false else {
            throw ValidationError("--coordinator '\(coordinator)' must be the coordinator's http(s) URL, e.g. http://127.0.0.1:8090")
        }
    }

    /// Runs `body` with a client; a call that fails without an answer (nothing listening, a name that does not
    /// resolve, TLS, no answer in time) is reported with the coordinator's URL, what went wrong, and exit status 1.
    /// `afterSending` is added when the request may have gone out before the failure.
    func withClient<T>(afterSending: String? = nil, _ body: (ServiceClient) async throws -> T) async throws -> T {
        let client = ServiceClient(configuration: .init(token: tokenOrEnvironment(token)))
        do {
            let result = try await body(client)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            let (reason, sent) = Self.reason(error)
            printError("cannot call the coordinator at \(base): \(reason) (--coordinator URL)" + (sent ? afterSending.map { "; \($0)" } ?? "" : ""))
            throw ExitCode(1)
        }
    }

    /// AsyncHTTPClient's and NIO's errors in words, and whether the request may have reached the coordinator.
    static func reason(_ error: any Error) -> (String, sent: Bool) {
        let text = "\(error)"
        if text.contains("Connection refused") || text.contains("errno: 111") { return ("connection refused: is it running there?", false) }
        if text.contains("UnknownHost") || text.contains("NXDOMAIN") || text.contains("getaddrinfo") {
            return ("the host name does not resolve", false)
        }
        if text.contains("connectTimeout") { return ("no connection within the timeout: is the host reachable?", false) }
        if text.contains("SSL") || text.contains("TLS") || text.contains("handshake") {
            return ("TLS failed (\(text)): does it serve https, or plain http?", false)
        }
        if text.contains("deadlineExceeded") || text.contains("readTimeout") { return ("no answer in time", true) }
        return (text, true)
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one global transaction (the documented controller's one-shot run). Exit 0 completed, 2 refused, 1 error."
    )
    @Option(help: "tcc, saga or xa.") var mode: Mode
    @Option(help: "The product to take at every participant.") var productId: Int64 = 1
    @Option(help: "How many.") var quantity: Int64 = 10
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let reply = try await client.withClient(afterSending: "the transaction may have begun: see dtx list") { http in
            try await http.post(client.base + "/v1/transactions", json: TransactionRequest(mode: mode, productId: productId, quantity: quantity), timeout: .seconds(60))
        }
        guard let view = try? reply.decode(TransactionView.self) else {
            printError("coordinator answered \(reply.status): \(reply.error.map { "\($0)" } ?? String(decoding: reply.body, as: UTF8.self))")
            throw ExitCode(1)
        }
        printTransaction(view)
        switch view.status {
        case .completed: return
        case .failed, .compensated: throw ExitCode(2)
        case .pending:
            print("the outcome is decided but not yet applied everywhere: the coordinator keeps retrying (dtx status \(view.id))")
            throw ExitCode(1)
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show one global transaction and its branches.")
    @Argument(help: "The worker_event id.") var id: Int64
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let reply = try await client.withClient { try await $0.get(client.base + "/v1/transactions/\(id)", timeout: .seconds(10)) }
        guard reply.status == 200 else {
            printError("coordinator answered \(reply.status): \(reply.error.map { "\($0)" } ?? "")")
            throw ExitCode(1)
        }
        printTransaction(try reply.decode(TransactionView.self))
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List recent global transactions.")
    @Option(help: "pending, completed, failed or compensated.") var status: GlobalStatus?
    @Option(help: "How many (1-1000).") var limit: Int = 20
    @OptionGroup var client: ClientOptions

    func run() async throws {
        var url = client.base + "/v1/transactions?limit=\(limit)"
        if let status { url += "&status=\(status.rawValue)" }
        let reply = try await client.withClient { try await $0.get(url, timeout: .seconds(10)) }
        guard reply.status == 200 else {
            printError("coordinator answered \(reply.status): \(reply.error.map { "\($0)" } ?? "")")
            throw ExitCode(1)
        }
        print(pad("ID", 18) + pad("MODE", 6) + pad("STATUS", 13) + pad("PHASE", 17) + "ERROR")
        for view in try reply.decode(TransactionList.self).transactions {
            print(pad("\(view.id)", 18) + pad(view.mode.rawValue, 6) + pad(view.status.rawValue, 13) + pad(view.phase, 17) + (view.errorMessage ?? ""))
        }
    }
}

extension Mode: ExpressibleByArgument {}
extension GlobalStatus: ExpressibleByArgument {}

func printTransaction(_ view: TransactionView) {
    print("worker_event \(view.id)  mode \(view.mode.rawValue)  status \(view.status.rawValue)  phase \(view.phase)")
    if let error = view.errorMessage { print("  reason: \(error)") }
    for branch in view.branches {
        print("  " + pad(branch.participant, 12) + pad("product \(branch.productId)", 12) + pad("qty \(branch.quantity)", 10)
            + pad(branch.state.rawValue, 17) + "attempts \(branch.attempts)" + (branch.lastError.map { "  last error: \($0)" } ?? ""))
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
}
