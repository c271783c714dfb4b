import Foundation

/// Which products the load takes, and how much.
///
/// Product ids: the normal products are `firstProduct ..< firstProduct + products`; the `exhausted` ones (stock 0
/// at ServiceB, so that a transaction on them is refused at the second participant) follow them. The `local`
/// baseline keeps ServiceB's side as a mirror product in ServiceA's database at `id + mirrorOffset`.
public struct Workload: Sendable, Codable {
    public enum Distribution: String, Sendable, Codable {
        /// Every product equally likely.
        case uniform
        /// Zipf over the products with exponent `zipfExponent`: a few hot products take most of the load.
        case zipf
    }

    public var products: Int = 1000
    public var stock: Int64 = 1_000_000
    public var quantity: Int64 = 1
    public var distribution: Distribution = .uniform
    public var zipfExponent: Double = 1.1
    /// Share of transactions sent to products that ServiceB has none of (they are refused there).
    public var failShare: Double = 0

    public static let firstProduct: Int64 = 1000
    public static let mirrorOffset: Int64 = 10_000_000

    public init() {}

    public var exhaustedProducts: Int { failShare > 0 ? max(10, products / 10) : 0 }
    public var firstExhausted: Int64 { Self.firstProduct + Int64(products) }

    /// A sampler for this workload (precomputes the Zipf table).
    public func sampler() -> Sampler { Sampler(workload: self) }

    public struct Sampler: Sendable {
        let workload: Workload
        let cumulative: [Double]

        init(workload: Workload) {
            self.workload = workload
            if workload.distribution == .zipf {
                var sum = 0.0
                var table: [Double] = []
                table.reserveCapacity(workload.products)
                for rank in 1...max(workload.products, 1) {
                    sum += 1 / pow(Double(rank), workload.zipfExponent)
                    table.append(sum)
                }
                cumulative = table.map { $0 / sum }
            } else {
                cumulative = []
            }
        }

        /// The product for the next transaction.
        public func next() -> Int64 {
            if workload.failShare > 0 && Double.random(in: 0..<1) < workload.failShare {
                return workload.firstExhausted + Int64.random(in: 0..<Int64(workload.exhaustedProducts))
            }
            switch workload.distribution {
            case .uniform:
                return Workload.firstProduct + Int64.random(in: 0..<Int64(max(workload.products, 1)))
            case .zipf:
                let u = Double.random(in: 0..<1)
                var low = 0
                var high = cumulative.count - 1
                while low < high {
                    let mid = (low + high) / 2
                    if cumulative[mid] < u { low = mid + 1 } else { high = mid }
                }
                return Workload.firstProduct + Int64(low)
            }
        }
    }
}
