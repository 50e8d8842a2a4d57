package io.edgevib.flink;

import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.Optional;
import java.util.PriorityQueue;

import org.apache.flink.connector.file.src.FileSourceSplit;
import org.apache.flink.connector.file.src.assigners.FileSplitAssigner;

/**
 * Hands out file splits in file-name order (then offset).
 *
 * <p>The edgevib bridge names spool files so that name order is write order. Flink's own
 * assigners return a backlog (after a restart, or at start-up) in directory-listing order,
 * which mixes event times far beyond any bounded out-of-orderness and makes honest records
 * late. With parallelism 1 the reader asks for one split at a time, so this keeps the
 * stream in arrival order.
 */
public final class OrderedSplitAssigner implements FileSplitAssigner {

    private static final Comparator<FileSourceSplit> ORDER =
            Comparator.comparing((FileSourceSplit s) -> s.path().getName())
                    .thenComparingLong(FileSourceSplit::offset);

    private final PriorityQueue<FileSourceSplit> queue = new PriorityQueue<>(ORDER);

    public OrderedSplitAssigner(Collection<FileSourceSplit> splits) {
        queue.addAll(splits);
    }

    @Override
    public Optional<FileSourceSplit> getNext(String hostname) {
        return Optional.ofNullable(queue.poll());
    }

    @Override
    public void addSplits(Collection<FileSourceSplit> splits) {
        queue.addAll(splits);
    }

    @Override
    public Collection<FileSourceSplit> remainingSplits() {
        return new ArrayList<>(queue);
    }

    /** Serializable factory for {@code FileSource.Builder#setSplitAssigner}. */
    public static final class Provider implements FileSplitAssigner.Provider {
        private static final long serialVersionUID = 1L;

        @Override
        public FileSplitAssigner create(Collection<FileSourceSplit> initialSplits) {
            return new OrderedSplitAssigner(initialSplits);
        }
    }
}
