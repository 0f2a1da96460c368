// Prints every key and value of RocksDB SST files, decoded by RocksDB itself, for tests/support/byte_scan.py.
// Run as a single-file program: java -cp rocksdbjni.jar SstEntries.java FILE...
// Output, per file: "file <path> <deletions>", then "entry <key hex> <value hex>" per visible entry.
// Deletion entries are not visible through the reader; their count says whether the file has any.
// A file that is gone by the time it is read (a live checkpoint) is skipped.
import java.util.HexFormat;
import org.rocksdb.Options;
import org.rocksdb.ReadOptions;
import org.rocksdb.RocksDB;
import org.rocksdb.SstFileReader;
import org.rocksdb.SstFileReaderIterator;

public class SstEntries {
  public static void main(String[] paths) throws Exception {
    RocksDB.loadLibrary();
    HexFormat hex = HexFormat.of();
    StringBuilder out = new StringBuilder();
    for (String path : paths) {
      if (!new java.io.File(path).exists()) {
        continue;
      }
      try (Options options = new Options(); SstFileReader reader = new SstFileReader(options)) {
        reader.open(path);
        out.append("file ").append(path).append(' ').append(reader.getTableProperties().getNumDeletions()).append('\n');
        try (ReadOptions read = new ReadOptions(); SstFileReaderIterator it = reader.newIterator(read)) {
          for (it.seekToFirst(); it.isValid(); it.next()) {
            out.append("entry ").append(hex.formatHex(it.key())).append(' ').append(hex.formatHex(it.value())).append('\n');
          }
        }
      }
    }
    System.out.print(out);
  }
}
