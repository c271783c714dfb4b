import DTXPostgres
import Logging
import PostgresNIO

/// Hands out transaction ids from blocks taken from the log's `worker_event_ids` row, one durable write per block.
///
/// The first record of a transaction is not waited for on disk, so its id cannot come from a sequence, whose state may
/// go back after a crash that lost such writes and hand an id out twice (a participant would take the new transaction
/// for the old one). A block is durable before any id of it is used, so after a crash every id handed out is above
/// every id handed out before. A block is given up after `lifetime`, so that ids follow the order in which
/// transactions begin to within that time (retention relies on it, see docs/DECISIONS.md).
actor IdAllocator {
    let client: PostgresClient
    let blockSize: Int
    let lifetime: Duration
    let callTimeout: Duration
    let logger: Logger
    private var next: Int64 = 0
    private var end: Int64 = 0
    private var takenAt: ContinuousClock.Instant = .now
    /// The block being taken, shared by every caller that needs it; `generation` tells one refill from the next.
    private var refill: (generation: Int, task: Task<(first: Int64, at: ContinuousClock.Instant), any Error>)?
    private var generations = 0

    init(client: PostgresClient, blockSize: Int = 100, lifetime: Duration = .seconds(10), callTimeout: Duration = .seconds(10), logger: Logger) {
        self.client = client
        self.blockSize = blockSize
        self.lifetime = lifetime
        self.callTimeout = callTimeout
        self.logger = logger
    }

    func next() async throws -> Int64 {
        while next >= end || ContinuousClock.now - takenAt > lifetime {
            let current = refill ?? startRefill()
            do {
                let block = try await current.task.value
                // the first caller back installs the block; the others find it installed
                if refill?.generation == current.generation {
                    next = block.first
                    end = block.first + Int64(blockSize)
                    takenAt = block.at
                    refill = nil
                }
            } catch {
                if refill?.generation == current.generation { refill = nil }
                throw error
            }
        }
        defer { next += 1 }
        return next
    }

    private func startRefill() -> (generation: Int, task: Task<(first: Int64, at: ContinuousClock.Instant), any Error>) {
        generations += 1
        let task = Task { [client, blockSize, callTimeout, logger] in
            let start = ContinuousClock.now
            let first = try await withDeadline(callTimeout) {
                for row in try await client.rows("SELECT dtx_allocate_ids(\(blockSize))", logger: logger) {
                    return try row.decode(Int64.self)
                }
                throw CoordinatorError.logWriteFailed("dtx_allocate_ids returned no row")
            }
            return (first: first, at: start)
        }
        refill = (generations, task)
        return refill!
    }
}
