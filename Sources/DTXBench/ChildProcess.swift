import DTXPostgres
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A service process started by the demo, the benchmark or a test: spawned with posix_spawn, its output in a log
/// file, stopped with a signal, waited for by pid. Only a pid: `Sendable`, and it leaks no pipe into other children.
public struct ChildProcess: Sendable {
    public let name: String
    public let pid: pid_t
    public let logPath: String
    /// With `controlled`: the write end of a pipe that is the child's standard input (see `send`). The child sees
    /// end of file when this process ends, however it ends.
    public let control: Int32?

    /// Starts `executable` with `arguments`, standard output and error appended to `logPath`. `controlled` gives it
    /// a pipe as standard input, for `send`; otherwise standard input is /dev/null.
    public static func spawn(name: String, executable: String, arguments: [String], logPath: String, controlled: Bool = false) throws -> ChildProcess {
        var pipeEnds: [Int32] = [-1, -1]
        if controlled {
            // close-on-exec on both ends: the child gets the read end as its standard input only, no other child gets either
            guard pipe(&pipeEnds) == 0 else { throw LaunchError("could not make a pipe for \(name): errno \(errno)") }
            _ = fcntl(pipeEnds[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(pipeEnds[1], F_SETFD, FD_CLOEXEC)
        }
        defer { if controlled { close(pipeEnds[0]) } }
        let pid: pid_t
        do {
            pid = try Command.spawn(executable, arguments: arguments) { actions in
                if controlled {
                    posix_spawn_file_actions_adddup2(&actions, pipeEnds[0], 0)
                } else {
                    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                }
                posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
            }
        } catch {
            if controlled { close(pipeEnds[1]) }
            throw LaunchError("could not start \(name) (\(executable)): \(error)")
        }
        return ChildProcess(name: name, pid: pid, logPath: logPath, control: controlled ? pipeEnds[1] : nil)
    }

    /// Writes one line to the child's standard input (`controlled` children only).
    public func send(_ line: String) throws {
        guard let control else { throw LaunchError("\(name) was not started with a control pipe") }
        let bytes = Array((line + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(control, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw LaunchError("could not write to \(name): errno \(errno)") }
    }

    /// Closes the control pipe: the child reads end of file.
    public func closeControl() {
        if let control { close(control) }
    }

    public func signal(_ signal: Int32) {
        kill(pid, signal)
    }

    /// The exit status once the process has ended (and reaps it), nil while it runs.
    public func exitStatus() -> Int32? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
        if result == -1 { return -1 }  // not our child any more (reaped already)
        return nil
    }

    /// Waits up to `timeout` for the process to end; returns its exit status, or nil if it still runs.
    @discardableResult
    public func wait(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = exitStatus() { return status }
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended within `grace`.
    public func stop(grace: Duration = .seconds(10)) async {
        signal(SIGTERM)
        if await wait(timeout: grace) == nil {
            signal(SIGKILL)
            await wait(timeout: .seconds(5))
        }
    }

    /// SIGKILL: no shutdown, no cleanup, as a crash.
    public func kill9() async {
        signal(SIGKILL)
        await wait(timeout: .seconds(5))
    }

    /// User + system CPU seconds so far (Linux /proc), counting reaped children too.
    public func cpuSeconds() -> Double? {
        ProcessCPU.seconds(pid: pid, includeChildren: true)
    }

    /// The last lines of the log, for error messages.
    public func logTail(lines: Int = 10) -> String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}

/// CPU time of processes, from /proc.
public enum ProcessCPU {
    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// utime + stime (+ cutime + cstime), in seconds; nil when the process is gone or /proc is missing.
    public static func seconds(pid: pid_t, includeChildren: Bool) -> Double? {
        guard let fields = statFields(pid) else { return nil }
        // fields after the command: index 0 = state (field 3); utime is field 14 -> index 11
        guard fields.count > 14, let utime = Double(fields[11]), let stime = Double(fields[12]),
              let cutime = Double(fields[13]), let cstime = Double(fields[14])
        else { return nil }
        return (utime + stime + (includeChildren ? cutime + cstime : 0)) / ticksPerSecond
    }

    /// A process and its live children: their own CPU, plus what reaped children of the parent used.
    public static func treeSeconds(root: pid_t) -> Double? {
        guard var total = seconds(pid: root, includeChildren: true) else { return nil }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = pid_t(entry), pid != root, let fields = statFields(pid), fields.count > 1, pid_t(fields[1]) == root else { continue }
            total += seconds(pid: pid, includeChildren: false) ?? 0
        }
        return total
    }

    /// CPU seconds of this process's children that have ended and been waited for (pgbench, say).
    public static func reapedChildrenSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    /// /proc/PID/stat after the command name: field 3 (state) onward.
    static func statFields(_ pid: pid_t) -> [String]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")")
        else { return nil }
        return text[text.index(after: close)...].split(separator: " ").map(String.init)
    }
}

public struct LaunchError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
