import ArgumentParser
import DTXPostgres
import Foundation
import Logging

/// A duration on the command line: `250ms`, `3s`, `5m`, `1h` (a bare number is seconds).
struct DurationArgument: ExpressibleByArgument, Sendable {
    var duration: Duration

    init(_ duration: Duration) { self.duration = duration }

    init?(argument: String) {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, factor) in units where argument.hasSuffix(suffix) {
            guard let value = Double(argument.dropLast(suffix.count)), value >= 0 else { return nil }
            self.duration = .milliseconds(Int64(value * factor * 1000))
            return
        }
        guard let value = Double(argument), value >= 0 else { return nil }
        self.duration = .milliseconds(Int64(value * 1000))
    }

    var defaultValueDescription: String { "\(duration)" }
}

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

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
func parseDatabaseURL(_ option: String?, environment name: String = "DTX_DATABASE_URL", what: String) throws -> DatabaseURL {
    guard let text = option ?? ProcessInfo.processInfo.environment[name] else {
        throw ValidationError("give --database-url for \(what) (or set \(name)), e.g. postgres://postgres@127.0.0.1:5432/dtx_service_a")
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
