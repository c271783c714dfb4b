import DTXProtocol

/// Carries the second-phase calls of many global transactions to one participant in one HTTP request.
///
/// The first call for a (participant, operation) opens a batch; it is sent when `window` has passed or it holds
/// `maxItems` calls, whichever comes first. The participant applies the items in one database round trip and answers
/// one result per item; each caller gets its own item's outcome, so one item's failure never fails another, and a
/// failed request is a retry for each of its items. First-phase calls are never batched.
actor BranchBatcher {
    struct Key: Hashable, Sendable {
        var participant: String
        var base: String
        var op: BranchOperation
    }

    private struct Open {
        var generation: Int
        var requests: [BranchRequest] = []
        var waiters: [CheckedContinuation<CallOutcome, Never>] = []
    }

    let window: Duration
    let maxItems: Int
    /// Sends one batch and answers one outcome per request, in order.
    let send: @Sendable (Key, [BranchRequest]) async -> [CallOutcome]
    private var open: [Key: Open] = [:]
    private var generations = 0

    init(window: Duration, maxItems: Int, send: @escaping @Sendable (Key, [BranchRequest]) async -> [CallOutcome]) {
        self.window = window
        self.maxItems = maxItems
        self.send = send
    }

    func submit(_ key: Key, _ request: BranchRequest) async -> CallOutcome {
        await withCheckedContinuation { continuation in
            if open[key] == nil {
                generations += 1
                open[key] = Open(generation: generations)
                let generation = generations
                Task { [window] in
                    try? await Task.sleep(for: window)
                    self.flush(key, generation: generation)
                }
            }
            open[key]!.requests.append(request)
            open[key]!.waiters.append(continuation)
            if open[key]!.requests.count >= maxItems { flush(key, generation: open[key]!.generation) }
        }
    }

    private func flush(_ key: Key, generation: Int) {
        guard let batch = open[key], batch.generation == generation else { return }
        open[key] = nil
        Task { [send] in
            let outcomes = await send(key, batch.requests)
            for (waiter, outcome) in zip(batch.waiters, outcomes) { waiter.resume(returning: outcome) }
        }
    }
}
