import Foundation

/// Runs external programs (initdb, pg_ctl, runuser) and reports failures with their output.
public enum Command {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var command: [String]
        public var status: Int32
        public var output: String
        public var description: String {
            let tail = output.split(separator: "\n").suffix(8).joined(separator: "\n")
            return "`\(command.joined(separator: " "))` exited with \(status)" + (tail.isEmpty ? "" : ":\n\(tail)")
        }
    }

    /// Runs `arguments` (the first is the program: a path, or a name looked up on PATH) and returns its output,
    /// standard error included. Throws `Failure` on a non-zero exit.
    @discardableResult
    public static func run(_ arguments: [String], environment: [String: String]? = nil) throws -> String {
        let (status, output) = try self.status(arguments, environment: environment)
        guard status == 0 else { throw Failure(command: arguments, status: status, output: output) }
        return output
    }

    /// Like `run` but returns the exit status instead of throwing on it.
    public static func status(_ arguments: [String], environment: [String: String]? = nil) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try self.resolve(arguments[0]))
        process.arguments = Array(arguments.dropFirst())
        if let environment { process.environment = environment }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// The full path of a program: `name` itself when it has a slash, else the first match on PATH.
    public static func resolve(_ name: String) throws -> String {
        if name.contains("/") { return name }
        if let found = self.which(name) { return found }
        throw Failure(command: [name], status: 127, output: "\(name) not found on PATH")
    }

    public static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for folder in path.split(separator: ":") {
            let candidate = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
