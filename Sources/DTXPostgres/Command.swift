import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    ///
    /// Uses posix_spawn and waitpid on the child's pid, not Foundation's `Process`: on Linux `Process` learns of the
    /// exit through a socket the child inherits, and a server that `pg_ctl start` leaves running inherits it too, so
    /// `waitUntilExit` would wait for the server to stop. Output goes to a file for the same reason.
    public static func status(_ arguments: [String], environment: [String: String]? = nil) throws -> (Int32, String) {
        let path = try self.resolve(arguments[0])
        let outputPath = NSTemporaryDirectory() + "dtx-command-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }

        let pid: pid_t
        do {
            pid = try spawn(path, arguments: Array(arguments.dropFirst()), environment: environment) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
            }
        } catch let error as SpawnError {
            throw Failure(command: arguments, status: 127, output: error.description)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let data = FileManager.default.contents(atPath: outputPath) ?? Data()
        return (exitStatus, String(decoding: data, as: UTF8.self))
    }

    public struct SpawnError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Starts the program at `path` (not looked up) with `arguments` (argv[0] is the path), the file actions
    /// `configure` adds (standard input, output and error), and a clean slate otherwise; returns its pid, to be waited
    /// for with waitpid. A clean slate, because the calling thread may be one of SwiftNIO's or of Swift concurrency's:
    /// - every descriptor above standard error is closed in the child. SwiftNIO opens its sockets without
    ///   close-on-exec, so a child would otherwise keep this process's listening and connected sockets for its
    ///   lifetime: a PostgreSQL server started by pg_ctl held a port this process had closed long ago;
    /// - no signal is blocked and every signal has its default action. The child inherits the calling thread's signal
    ///   mask, and these threads block nearly every signal: pgbench, whose -T ends on SIGALRM, never ended.
    public static func spawn(
        _ path: String, arguments: [String], environment: [String: String]? = nil,
        configure: (inout posix_spawn_file_actions_t) -> Void
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        configure(&actions)
        #if os(Linux)
        // glibc (2.34 on) declares it only for _GNU_SOURCE, which Swift's Glibc module does not define: by name
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3)
        }
        #endif

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environmentList = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let envp: [UnsafeMutablePointer<CChar>?] = environmentList.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }

        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw SpawnError(description: "could not start \(path): \(String(cString: strerror(spawned)))") }
        return pid
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
