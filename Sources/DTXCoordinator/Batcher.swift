/// Carries many calls of one kind in one request, clocked by the requests themselves: a call is sent at once when
/// none of its kind is in flight; calls that arrive while one is in flight wait for it and then go together, up to
/// `maxItems` in one request. So an idle system adds no wait, and a busy one sends fewer, larger requests; the busier,
/// the larger. No call waits longer than `window` for the one in flight: then its group goes in a request of its own.
///
/// Used for second-phase branch calls (one HTTP request to a participant, one database round trip there) and for the
/// coordinator's log writes (one statement, one commit).
actor Batcher<Key: Hashable & Sendable, Item: Sendable, Outcome: Sendable> {
    private struct Queue {
        var inFlight = 0
        var items: [Item] = []
        var waiters: [CheckedContinuation<Outcome, Never>] = []
        /// The group now waiting, so that a guard timer fires only for its own (numbered by the actor: a queue removed
        /// and made again must not reuse an old timer's number).
        var generation = 0
    }

    private var generations = 0

    let window: Duration
    let maxItems: Int
    /// Sends one request and answers one outcome per item, in order.
    let send: @Sendable (Key, [Item]) async -> [Outcome]
    private var queues: [Key: Queue] = [:]

    init(window: Duration, maxItems: Int, send: @escaping @Sendable (Key, [Item]) async -> [Outcome]) {
        self.window = window
        self.maxItems = maxItems
        self.send = send
    }

    func submit(_ key: Key, _ item: Item) async -> Outcome {
        await withCheckedContinuation { continuation in
            var queue = queues[key, default: Queue()]
            queue.items.append(item)
            queue.waiters.append(continuation)
            let startsGroup = queue.items.count == 1
            if startsGroup { queue.generation = nextGeneration() }
            queues[key] = queue
            if queue.inFlight == 0 || queue.items.count >= maxItems {
                flush(key)
            } else if startsGroup {
                let generation = queue.generation
                Task { [window] in
                    try? await Task.sleep(for: window)
                    self.flush(key, ifStillWaiting: generation)
                }
            }
        }
    }

    private func flush(_ key: Key, ifStillWaiting generation: Int? = nil) {
        guard var queue = queues[key], !queue.items.isEmpty else { return }
        if let generation, queue.generation != generation { return }
        let count = min(queue.items.count, maxItems)
        let items = Array(queue.items.prefix(count))
        let waiters = Array(queue.waiters.prefix(count))
        queue.items.removeFirst(count)
        queue.waiters.removeFirst(count)
        queue.inFlight += 1
        if !queue.items.isEmpty { queue.generation = nextGeneration() }
        queues[key] = queue
        Task { [send] in
            let outcomes = await send(key, items)
            for (waiter, outcome) in zip(waiters, outcomes) { waiter.resume(returning: outcome) }
            self.landed(key)
        }
    }

    private func nextGeneration() -> Int {
        generations += 1
        return generations
    }

    /// A request came back: the calls that waited for it go now.
    private func landed(_ key: Key) {
        queues[key]?.inFlight -= 1
        if let queue = queues[key] {
            if queue.items.isEmpty && queue.inFlight == 0 {
                queues[key] = nil
            } else if !queue.items.isEmpty {
                flush(key)
            }
        }
    }
}
