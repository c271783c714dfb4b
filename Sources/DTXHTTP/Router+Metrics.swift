import Hummingbird
import Prometheus

extension Router where Context == DTXRequestContext {
    /// `GET /metrics`: the registry in the Prometheus text format.
    public func addMetricsRoute(_ registry: PrometheusCollectorRegistry) {
        self.get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(4096)
            registry.emit(into: &buffer)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer))
            )
        }
    }
}

extension Router where Context == DTXRequestContext {
    /// `GET /openapi.json`: the service's OpenAPI document, as committed in openapi/.
    public func addOpenAPIRoute(_ document: [UInt8]) {
        self.get("/openapi.json") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: document)))
        }
    }
}

/// Histogram buckets for request and transaction latencies, 1 ms to 10 s.
public let latencyBuckets: [Duration] = [
    .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(50),
    .milliseconds(100), .milliseconds(200), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10),
]

extension PrometheusCollectorRegistry {
    /// The counter `name` with these labels (made on first use, the same one after).
    public func counter(_ name: String, _ labels: [(String, String)] = [], help: String = "") -> Counter {
        self.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// The latency histogram `name` with these labels, buckets from 1 ms to 10 s.
    public func latencyHistogram(_ name: String, _ labels: [(String, String)] = [], help: String = "") -> DurationHistogram {
        self.makeDurationHistogram(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels, buckets: latencyBuckets
        )
    }
}

extension PrometheusCollectorRegistry {
    /// A retention pass: rows pruned per table (counter), and each table's oldest row age (gauge), so that an operator
    /// sees retention working.
    public func recordRetention(pruned: [String: Int64], oldestSeconds: [String: Double]) {
        for (table, count) in pruned where count > 0 {
            counter("dtx_retention_pruned_rows_total", [("table", table)], help: "Rows deleted by retention").increment(by: count)
        }
        for (table, age) in oldestSeconds {
            makeGauge(
                descriptor: MetricNameDescriptor(metricName: "dtx_retention_oldest_row_age_seconds", unitName: "", helpText: "Age of the oldest row"),
                labels: [("table", table)]
            ).set(age)
        }
    }
}
