import ArgumentParser
import DTXBench
import Foundation
import Logging

struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "A TCP relay that delays every chunk by half a round-trip time each way (the bench's network; no privileges needed).",
        discussion: """
            Each --link NAME=PORT:HOST:TARGET_PORT listens on 127.0.0.1:PORT and forwards to HOST:TARGET_PORT. Standard input \
            takes commands, one per line: "cut NAME" (refuse new connections, stall open ones), "heal NAME", "quit". The relay \
            ends at the end of its standard input.
            """
    )

    @Option(help: "Round-trip time through the relay in milliseconds, 0 to 1000, e.g. 5ms or 0.5ms.") var rtt: RTTArgument
    @Option(name: .customLong("link"), help: "NAME=LISTEN_PORT:TARGET_HOST:TARGET_PORT (repeat).") var links: [String]
    @OptionGroup var lifecycle: LifecycleOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "dtx.relay")
        let parsed = try links.map { spec -> Relay.Link in
            // the host is what lies between the first and the last colon, so that an IPv6 address ([::1] or ::1) fits
            let parts = spec.split(separator: "=", maxSplits: 1)
            let address = parts.count == 2 ? parts[1] : ""
            guard parts.count == 2, let first = address.firstIndex(of: ":"), let last = address.lastIndex(of: ":"), first < last,
                  let listen = Int(address[..<first]), (0...65535).contains(listen),
                  let target = Int(address[address.index(after: last)...]), (1...65535).contains(target)
            else {
                throw ValidationError("--link '\(spec)': give NAME=LISTEN_PORT:TARGET_HOST:TARGET_PORT, e.g. coordinator=9100:127.0.0.1:8090")
            }
            var host = address[address.index(after: first)..<last]
            if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
            return Relay.Link(name: String(parts[0]), listenPort: listen, targetHost: String(host), targetPort: target)
        }
        guard !parsed.isEmpty else { throw ValidationError("give at least one --link") }
        let relay = Relay(links: parsed, rtt: rtt.duration, logger: logger)
        let ports = try await relay.start()
        for name in ports.keys.sorted() { say("relay \(name) 127.0.0.1:\(ports[name]!)") }
        if let parent = lifecycle.parentPid {
            Task {
                while kill(parent, 0) == 0 { try? await Task.sleep(for: .milliseconds(500)) }
                await relay.stop()
                Foundation.exit(0)
            }
        }
        for await line in Self.standardInputLines() {
            let words = line.split(separator: " ").map(String.init)
            switch (words.first, words.count) {
            case ("cut", 2): try await relay.cut(words[1])
            case ("heal", 2): try await relay.heal(words[1])
            case ("quit", _): await relay.stop(); return
            default: logger.warning("unknown relay command", metadata: ["dtx.line": "\(line)"])
            }
            say("ok \(line)")
        }
        await relay.stop()
    }

    private func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// Standard input, a line at a time, read on a thread of its own (a read blocks); ends at end of file.
    static func standardInputLines() -> AsyncStream<String> {
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        Thread.detachNewThread {
            while let line = readLine() { continuation.yield(line) }
            continuation.finish()
        }
        return lines
    }
}
