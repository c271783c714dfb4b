import ArgumentParser
import DTXBench
import DTXPostgres
import Foundation
import Logging

/// A duration on the command line: `250ms`, `3s`, `5m`, `1h` (a bare number is seconds).
struct DurationArgument: ExpressibleByArgument, Sendable {
    var duration: Duration

    init(_ duration: Duration) { self.duration = duration }

    init?(argument: String) {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        let (number, factor) = units.first { argument.hasSuffix($0.0) }.map { (argument.dropLast($0.0.count), $0.1) } ?? (argument[...], 1)
        guard let value = Double(number), let duration = Self.duration(seconds: value * factor) else { return nil }
        self.duration = duration
    }

    /// Whole milliseconds from 0 or 1 ms up to `limit`; nil for anything else (negative, not finite, a non-zero value
    /// below 1 ms, which would round to 0 and mean "off" or "for ever" to some flags, or a value whose arithmetic
    /// would overflow). ArgumentParser then names the flag and the value it refused.
    static func duration(seconds: Double) -> Duration? {
        guard seconds.isFinite, seconds == 0 || (0.001...limit.inSeconds).contains(seconds) else { return nil }
        return .milliseconds(Int64(seconds * 1000))
    }

    /// The longest duration a flag takes: about three years, far below where nanosecond arithmetic on it overflows.
    static let limit: Duration = .seconds(100_000_000)

    var defaultValueDescription: String { "\(duration)" }
}

/// A round-trip time in milliseconds with microsecond precision ("0.5ms", "1.5ms", "5"), as the bench's --rtt takes it.
struct RTTArgument: ExpressibleByArgument, Sendable {
    var duration: Duration

    init?(argument: String) {
        guard let duration = try? Bench.parseRTT(argument) else { return nil }
        self.duration = duration
    }
}

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)': give trace, debug, info, notice, warning, error or critical")
        }
    }

    func bootstrap(label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

/// `--database-url`, else the environment variable `name`.
func parseDatabaseURL(
    _ option: String?, environment name: String = "DTX_DATABASE_URL", what: String, exampleDatabase: String = "dtx_service_a"
) throws -> DatabaseURL {
    guard let text = option ?? ProcessInfo.processInfo.environment[name] else {
        throw ValidationError("give --database-url for \(what) (or set \(name)), e.g. postgres://postgres@127.0.0.1:5432/\(exampleDatabase)")
    }
    do {
        return try DatabaseURL(text)
    } catch {
        throw ValidationError("\(error)")
    }
}

/// `--token`, else `DTX_TOKEN`.
func tokenOrEnvironment(_ option: String?) -> String? {
    option ?? ProcessInfo.processInfo.environment["DTX_TOKEN"]
}
