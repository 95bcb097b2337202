// File formats and files: IDX (MNIST) reading, safetensors, atomic writes, run directories, the
// in-memory data set and its reproducible order.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

#include "data/image_data.h"
#include "io/atomic_file.h"
#include "io/idx.h"
#include "io/png.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace blocklab {
namespace {

using test::Contains;
using test::TempDir;
using test::ThrowsUserError;
namespace fs = std::filesystem;

std::vector<uint8_t> counting(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t((i * 7 + 3) % 256);
  return v;
}

// ---------------------------------------------------------------------------------------- IDX

TEST(Idx, ReadsGzippedAndRawFiles) {
  TempDir dir;
  const auto data = counting(4 * 5 * 3);
  for (bool gz : {true, false}) {
    const auto path = dir.file(gz ? "x.gz" : "x");
    test::write_idx(path, {4, 5, 3}, data, gz);
    const auto t = read_idx(path, 3);
    ASSERT_EQ(t.scalar_type(), torch::kUInt8);
    ASSERT_EQ(t.sizes(), (std::vector<int64_t>{4, 5, 3}));
    EXPECT_TRUE(std::equal(data.begin(), data.end(), t.data_ptr<uint8_t>())) << (gz ? "gz" : "raw");
    EXPECT_EQ(t[2][4][1].item<int>(), data[2 * 15 + 4 * 3 + 1]);
  }
}

TEST(Idx, LoadsASplitFromEitherFileKind) {
  TempDir dir;
  const std::vector<uint8_t> labels = {3, 1, 4, 1, 5, 9};
  const auto images = counting(6 * 28 * 28);
  test::write_idx(dir.file("train-images-idx3-ubyte.gz"), {6, 28, 28}, images, true);
  test::write_idx(dir.file("train-labels-idx1-ubyte"), {6}, labels, false);  // mixed: one raw, one gz
  const auto split = load_idx_split(dir.path(), "train");
  EXPECT_EQ(split.size(), 6);
  EXPECT_EQ(split.images.sizes(), (std::vector<int64_t>{6, 1, 28, 28}));
  EXPECT_EQ(split.labels.scalar_type(), torch::kInt64);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(split.labels[i].item<int64_t>(), labels[size_t(i)]);
  EXPECT_EQ(split.images[5][0][27][27].item<int>(), images.back());
}

TEST(Idx, MissingFileNamesIt) {
  TempDir dir;
  const auto path = dir.file("nope-idx1-ubyte");
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(path, 1); }, {path}));
}

TEST(Idx, MissingSplitFileNamesTheDirectory) {
  TempDir dir;
  const std::string missing = dir.path() + "/does-not-exist";
  EXPECT_TRUE(ThrowsUserError([&] { load_idx_split(missing, "train"); }, {missing, "train-images-idx3-ubyte"}));
  // Only the labels missing.
  test::write_idx(dir.file("t10k-images-idx3-ubyte.gz"), {2, 28, 28}, counting(2 * 28 * 28), true);
  EXPECT_TRUE(ThrowsUserError([&] { load_idx_split(dir.path(), "t10k"); }, {dir.path(), "t10k-labels-idx1-ubyte"}));
}

TEST(Idx, TruncatedFilesNameTheFile) {
  TempDir dir;
  const auto full = test::idx_bytes({10, 28, 28}, counting(10 * 28 * 28));
  // Data cut short, raw and gzipped.
  const auto raw = dir.file("short-raw");
  test::write_bytes(raw, full.substr(0, full.size() - 100));
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(raw, 3); }, {raw, "truncated"}));
  const auto gz = dir.file("short.gz");
  test::write_gz(gz, full.substr(0, 16 + 5 * 28 * 28));
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(gz, 3); }, {gz}));
  // Header cut short.
  const auto header = dir.file("short-header");
  test::write_bytes(header, full.substr(0, 10));
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(header, 3); }, {header}));
  // A gzip stream cut in the middle (the compressed bytes themselves truncated).
  const auto whole = dir.file("whole.gz");
  test::write_gz(whole, full);
  const auto cut = dir.file("cut.gz");
  const auto gz_bytes = test::read_bytes(whole);
  test::write_bytes(cut, gz_bytes.substr(0, gz_bytes.size() / 2));
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(cut, 3); }, {cut}));
  // An empty file.
  const auto empty = dir.file("empty");
  test::write_bytes(empty, "");
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(empty, 1); }, {empty}));
}

TEST(Idx, GarbageAndWrongMagicNameTheFile) {
  TempDir dir;
  std::string garbage;
  std::mt19937 rng(3);
  for (int i = 0; i < 5000; ++i) garbage.push_back(char(rng() & 0xff));
  garbage[0] = 'G';  // certainly not a gzip or IDX header
  const auto g = dir.file("garbage");
  test::write_bytes(g, garbage);
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(g, 3); }, {g}));
  const auto text = dir.file("readme.txt.gz");
  test::write_gz(text, "This is not an IDX file at all, just some text.\n");
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(text, 1); }, {text, "magic"}));
  // An images file where labels are expected (3 dims instead of 1): swapped files.
  const auto images = dir.file("images.gz");
  test::write_idx(images, {2, 28, 28}, counting(2 * 28 * 28), true);
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(images, 1); }, {images, "magic"}));
  // A signed-byte (0x09) IDX file.
  const auto signed_type = dir.file("signed");
  test::write_bytes(signed_type, test::idx_bytes({3}, {1, 2, 3}, 0x09));
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(signed_type, 1); }, {signed_type, "magic"}));
  // Trailing bytes after the data.
  const auto trailing = dir.file("trailing");
  test::write_bytes(trailing, test::idx_bytes({3}, {1, 2, 3}) + "xx");
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(trailing, 1); }, {trailing}));
  // A zero dimension.
  const auto zero = dir.file("zero");
  test::write_bytes(zero, test::idx_bytes({0, 28, 28}, {}));
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(zero, 3); }, {zero}));
}

TEST(Idx, CorruptGzipAndHugeHeadersAreRefusedBeforeAllocating) {
  TempDir dir;
  const auto full = test::idx_bytes({10, 28, 28}, counting(10 * 28 * 28));
  const auto whole = dir.file("whole.gz");
  test::write_gz(whole, full);
  auto bytes = test::read_bytes(whole);
  // Flip one bit of the stored CRC-32 (the gzip trailer's first 4 of its last 8 bytes): the data
  // decompresses fine, only the integrity check can tell.
  bytes[bytes.size() - 8] = char(bytes[bytes.size() - 8] ^ 1);
  const auto crc = dir.file("crc.gz");
  test::write_bytes(crc, bytes);
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(crc, 3); }, {crc, "corrupt"}));
  // The stored length (ISIZE, the last 4 bytes) is checked too.
  bytes = test::read_bytes(whole);
  bytes[bytes.size() - 1] = char(bytes[bytes.size() - 1] ^ 1);
  const auto len = dir.file("length.gz");
  test::write_bytes(len, bytes);
  EXPECT_TRUE(ThrowsUserError([&] { read_idx(len, 3); }, {len, "corrupt"}));
  // Headers claiming 2^31 x 2^31 x 2^31 or 2^24 images of a small file: refused by size, naming the file.
  for (const auto& dims : std::vector<std::vector<uint32_t>>{{1u << 31, 1u << 31, 1u << 31}, {1u << 24, 28, 28}}) {
    const auto huge = dir.file("huge");
    test::write_bytes(huge, test::idx_bytes(dims, counting(100)));
    EXPECT_TRUE(ThrowsUserError([&] { read_idx(huge, 3); }, {huge, "truncated"}));
  }
}

TEST(Idx, ImageLabelCountMismatchNamesBothFiles) {
  TempDir dir;
  test::write_idx(dir.file("train-images-idx3-ubyte.gz"), {10, 28, 28}, counting(10 * 28 * 28), true);
  test::write_idx(dir.file("train-labels-idx1-ubyte.gz"), {9}, counting(9), true);
  EXPECT_TRUE(ThrowsUserError([&] { load_idx_split(dir.path(), "train"); },
                              {dir.file("train-images-idx3-ubyte.gz"), dir.file("train-labels-idx1-ubyte.gz")}));
}

// ------------------------------------------------------------------------------- safetensors

TensorMap sample_tensors() {
  torch::manual_seed(4);
  TensorMap m;
  m["f32"] = torch::randn({3, 4});
  m["f64"] = torch::randn({2, 3, 2}, torch::kFloat64);
  m["f16"] = torch::randn({5}).to(torch::kFloat16);
  m["bf16"] = torch::randn({2, 2}).to(torch::kBFloat16);
  m["i64"] = torch::tensor({int64_t(1) << 40, int64_t(-5), int64_t(7)});
  m["i32"] = torch::randint(-1000, 1000, {7}, torch::kInt32);
  m["i16"] = torch::randint(-1000, 1000, {2, 3}, torch::kInt16);
  m["i8"] = torch::randint(-100, 100, {9}, torch::kInt8);
  m["u8"] = torch::randint(0, 256, {1, 1, 3}, torch::kUInt8);
  m["bool"] = torch::rand({4}) > 0.5;
  m["scalar"] = torch::tensor(3.5);
  m["empty"] = torch::zeros({0, 3});
  m["transposed"] = torch::arange(12, torch::kFloat32).view({3, 4}).t();  // not contiguous
  m["nan"] = torch::tensor({std::nanf(""), INFINITY, -0.0f});
  return m;
}

TEST(Safetensors, RoundTripIsBitExact) {
  TempDir dir;
  const auto tensors = sample_tensors();
  const std::map<std::string, std::string> meta = {{"step", "12"}, {"note", "a \"quoted\" value"}};
  const auto path = dir.file("t.safetensors");
  save_safetensors(path, tensors, meta);
  std::map<std::string, std::string> meta_back;
  const auto back = load_safetensors(path, &meta_back);
  EXPECT_EQ(meta_back, meta);
  ASSERT_EQ(back.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(back.count(name));
    const auto& b = back.at(name);
    EXPECT_EQ(b.scalar_type(), t.scalar_type());
    EXPECT_EQ(b.sizes(), t.sizes());
    const auto c = t.contiguous();
    ASSERT_EQ(b.nbytes(), c.nbytes());
    if (c.nbytes() > 0) EXPECT_EQ(std::memcmp(b.data_ptr(), c.data_ptr(), c.nbytes()), 0);  // bitwise, NaN included
  }
  // The bytes are a function of the content: writing again gives the same file.
  EXPECT_EQ(test::read_bytes(path), safetensors_bytes(tensors, meta));
  EXPECT_EQ(safetensors_bytes(back, meta), safetensors_bytes(tensors, meta));
  // Without metadata there is no __metadata__ entry, and it never comes back as a tensor.
  const auto plain = safetensors_bytes({{"a", torch::ones({2})}});
  EXPECT_EQ(plain.find("__metadata__"), std::string::npos);
  EXPECT_FALSE(back.count("__metadata__"));
}

TEST(Safetensors, HeaderIsValidJsonAndDataIsAligned) {
  const auto tensors = sample_tensors();
  const auto bytes = safetensors_bytes(tensors, {{"k", "v"}});
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  ASSERT_LE(8 + n, bytes.size());
  const auto header = nlohmann::json::parse(bytes.substr(8, n));  // throws if not JSON
  ASSERT_TRUE(header.is_object());
  EXPECT_EQ(header.at("__metadata__"), nlohmann::json({{"k", "v"}}));
  const std::map<std::string, std::string> dtype = {
      {"f32", "F32"}, {"f64", "F64"}, {"f16", "F16"}, {"bf16", "BF16"}, {"i64", "I64"},  {"i32", "I32"},
      {"i16", "I16"}, {"i8", "I8"},   {"u8", "U8"},   {"bool", "BOOL"}};
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(header.contains(name));
    const auto& info = header.at(name);
    if (dtype.count(name)) EXPECT_EQ(info.at("dtype").get<std::string>(), dtype.at(name));
    EXPECT_EQ(info.at("shape").get<std::vector<int64_t>>(), t.sizes().vec());
    const auto off = info.at("data_offsets").get<std::vector<uint64_t>>();
    ASSERT_EQ(off.size(), 2u);
    EXPECT_EQ(off[1] - off[0], uint64_t(t.numel()) * t.element_size());
    ranges.emplace_back(off[0], off[1]);
  }
  // The tensors tile the data section exactly, without gaps or overlaps.
  std::sort(ranges.begin(), ranges.end());
  uint64_t at = 0;
  for (const auto& [lo, hi] : ranges) {
    EXPECT_EQ(lo, at);
    at = hi;
  }
  EXPECT_EQ(at, bytes.size() - 8 - n);
  // Little-endian data: f32 as written.
  const auto& f32 = tensors.at("f32");
  const auto off = header.at("f32").at("data_offsets").get<std::vector<uint64_t>>();
  float first;
  std::memcpy(&first, bytes.data() + 8 + n + off[0], 4);
  EXPECT_EQ(first, f32[0][0].item<float>());
}

// Builds a file from a header (JSON text) and a data section.
std::string with_header(const std::string& json, const std::string& data) {
  std::string h = json;
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(h.size()) >> (8 * i)) & 0xff);
  return out + h + data;
}

TEST(Safetensors, CorruptFilesThrowUserErrorNamingTheFile) {
  TempDir dir;
  const auto good = safetensors_bytes({{"w", torch::randn({4, 4})}, {"b", torch::randn({4})}});
  auto expect_bad = [&](const std::string& label, const std::string& bytes) {
    SCOPED_TRACE(label);
    const auto path = dir.file(label + ".safetensors");
    test::write_bytes(path, bytes);
    EXPECT_TRUE(ThrowsUserError([&] { load_safetensors(path); }, {path}));
    EXPECT_TRUE(ThrowsUserError([&] { parse_safetensors(bytes, "in-memory name"); }, {"in-memory name"}));
  };
  expect_bad("truncated-data", good.substr(0, good.size() - 3));
  expect_bad("truncated-header", good.substr(0, 20));
  expect_bad("four-bytes", good.substr(0, 4));
  expect_bad("empty", "");
  std::string huge = good;
  huge[7] = char(0x7f);  // header length far past the end
  expect_bad("huge-header-length", huge);
  std::string not_json = good;
  not_json[8] = '#';
  expect_bad("not-json", not_json);
  const std::string data(64, '\0');
  expect_bad("bad-dtype", with_header(R"({"x":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", data));
  expect_bad("no-shape", with_header(R"({"x":{"dtype":"F32","data_offsets":[0,8]}})", data));
  expect_bad("offsets-vs-shape", with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data));
  expect_bad("offsets-past-end", with_header(R"({"x":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}})", data));
  expect_bad("reversed-offsets", with_header(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data));
  expect_bad("three-offsets", with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", data));
  expect_bad("string-shape", with_header(R"({"x":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", data));
  // Strictly the format: the tensors tile the data section from 0 to its end.
  expect_bad("overlap", with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                    std::string(12, '\0')));
  expect_bad("gap", with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("y":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                std::string(20, '\0')));
  expect_bad("trailing", with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(16, '\0')));
  expect_bad("not-from-zero", with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                          std::string(16, '\0')));
  EXPECT_NO_THROW(parse_safetensors(
      with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), "exact"));
}

TEST(Safetensors, CorruptHeaderValuesThrowUserError) {
  // Values that are valid JSON but impossible: a negative or absurd dimension, metadata that is
  // not a string map. These must be reported like every other malformed file, not escape as
  // another exception type.
  const std::string data(64, '\0');
  EXPECT_TRUE(ThrowsUserError(
      [&] { parse_safetensors(with_header(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data), "neg"); },
      {"neg"}));
  // A dimension far too large for the data (4 TiB of F32): refused by its offsets, not allocated.
  EXPECT_TRUE(ThrowsUserError(
      [&] {
        parse_safetensors(
            with_header(R"({"x":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,8]}})", data), "huge");
      },
      {"huge"}));
  std::map<std::string, std::string> meta;
  EXPECT_TRUE(ThrowsUserError(
      [&] { parse_safetensors(with_header(R"({"__metadata__":{"step":12}})", data), "meta", &meta); }, {"meta"}));
}

TEST(AtomicFile, LeavesNoTemporaryFiles) {
  TempDir dir;
  const auto path = dir.file("model.safetensors");
  save_safetensors(path, {{"a", torch::ones({3})}});
  save_safetensors(path, {{"a", torch::zeros({5})}});  // replaces
  write_file_atomic(dir.file("notes.txt"), "hello\n");
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"model.safetensors", "notes.txt"}));
  EXPECT_EQ(load_safetensors(path).at("a").numel(), 5);
  EXPECT_EQ(read_file(dir.file("notes.txt")), "hello\n");
  // Failures name the file and leave nothing behind.
  const auto missing_dir = dir.file("no/such/dir/x.bin");
  EXPECT_TRUE(ThrowsUserError([&] { write_file_atomic(missing_dir, "x"); }, {missing_dir}));
  EXPECT_TRUE(ThrowsUserError([&] { read_file(dir.file("absent")); }, {dir.file("absent")}));
  EXPECT_TRUE(ThrowsUserError([&] { load_safetensors(dir.file("absent.safetensors")); }, {dir.file("absent.safetensors")}));
  names.clear();
  for (const auto& e : fs::directory_iterator(dir.path())) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"model.safetensors", "notes.txt"}));
}

// ------------------------------------------------------------------------------- run directory

TEST(RunDir, MetricsAppendAndTruncate) {
  TempDir dir;
  RunDir run(dir.file("run/nested"));
  EXPECT_TRUE(fs::is_directory(dir.file("run/nested")));
  for (int s : {10, 20, 30}) run.append_metrics({{"step", s}, {"loss", 1.0 / s}});
  run.append_metrics({{"step", 10}, {"evaluation", {{"accuracy", 0.5}}}, {"final", true}});  // redone by the resumed run
  {
    std::ofstream out(run.file("metrics.jsonl"), std::ios::app);
    out << "{\"step\": 40, \"loss\"";  // a line cut short by a crash
  }
  run.truncate_metrics(20);
  std::istringstream in(read_file(run.file("metrics.jsonl")));
  std::vector<int64_t> steps;
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{10, 20}));
  run.truncate_metrics(-1);
  EXPECT_EQ(read_file(run.file("metrics.jsonl")), "");
  run.write_json("s.json", {{"a", 1}});
  EXPECT_EQ(run.read_json("s.json").at("a").get<int>(), 1);
  EXPECT_TRUE(run.has("s.json"));
  EXPECT_FALSE(run.has("t.json"));
  run.write_text("bad.json", "{nope");
  EXPECT_TRUE(ThrowsUserError([&] { run.read_json("bad.json"); }, {run.file("bad.json")}));
  EXPECT_TRUE(ThrowsUserError([&] { RunDir(dir.file("absent"), /*create=*/false); }, {dir.file("absent")}));
}

// ---------------------------------------------------------------------------------- data set

TEST(ImageData, LoadsLimitsAndNormalizes) {
  TempDir dir;
  test::write_synthetic_dataset(dir.path(), 100, 40);
  const auto data = ImageData::load(dir.path(), 64, 10);
  EXPECT_EQ(data.size(Split::Train), 64);
  EXPECT_EQ(data.size(Split::Test), 10);
  EXPECT_EQ(data.shape().classes, 10);
  EXPECT_EQ(data.shape().height, 28);
  EXPECT_EQ(data.shape().channels, 1);
  EXPECT_EQ(data.source(), dir.path());
  const auto full = ImageData::load(dir.path());
  EXPECT_EQ(full.size(Split::Train), 100);
  EXPECT_EQ(full.size(Split::Test), 40);
  const auto& train = data.of(Split::Train);
  EXPECT_TRUE(torch::equal(full.of(Split::Train).images.slice(0, 0, 64), train.images));
  // Mean and (population) std of the (limited) training pixels in [0, 1].
  const auto px = train.images.to(torch::kFloat64) / 255.0;
  EXPECT_NEAR(data.mean(), px.mean().item<double>(), 1e-12);
  EXPECT_NEAR(data.std(), px.std(/*unbiased=*/false).item<double>(), 1e-9);  // population std, from a histogram
  const auto batch = data.batch(Split::Train, torch::arange(64, torch::kInt64), torch::kCPU);
  EXPECT_EQ(batch.x.scalar_type(), torch::kFloat32);
  EXPECT_EQ(batch.x.sizes(), (std::vector<int64_t>{64, 1, 28, 28}));
  EXPECT_NEAR(batch.x.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(batch.x.to(torch::kFloat64).std().item<double>(), 1.0, 1e-4);
  EXPECT_TRUE(torch::equal(batch.y, train.labels));
}

TEST(ImageData, RejectsLabelsOutOfRange) {
  TempDir dir;
  test::write_synthetic_dataset(dir.path(), 20, 10);
  std::vector<uint8_t> labels(10);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = uint8_t(i % 10);
  labels[3] = 10;
  test::write_idx(dir.file("t10k-labels-idx1-ubyte.gz"), {10}, labels, true);
  EXPECT_TRUE(ThrowsUserError([&] { ImageData::load(dir.path()); }, {dir.path(), "t10k-labels"}));
}

TEST(DataOrder, EpochsArePermutationsAndReproducible) {
  DataOrder order(100, 32, 9);
  EXPECT_EQ(order.steps_per_epoch(), 3);  // the last partial batch is dropped
  EXPECT_EQ(order.batch_size(), 32);
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::set<int64_t> seen;
    for (int s = 0; s < 3; ++s) {
      const auto idx = order.indices(epoch * 3 + s);
      EXPECT_EQ(idx.numel(), 32);
      for (int64_t i = 0; i < idx.numel(); ++i) seen.insert(idx[i].item<int64_t>());
    }
    EXPECT_EQ(seen.size(), 96u) << "no repeats within an epoch";
    EXPECT_GE(*seen.begin(), 0);
    EXPECT_LT(*seen.rbegin(), 100);
  }
  EXPECT_FALSE(torch::equal(order.indices(0), order.indices(3))) << "a fresh order each epoch";
  // Random access (as a resumed run does) gives the same batches as a sequential pass.
  DataOrder fresh(100, 32, 9);
  EXPECT_TRUE(torch::equal(fresh.indices(7), order.indices(7)));
  EXPECT_TRUE(torch::equal(fresh.indices(1), order.indices(1)));
  DataOrder other_seed(100, 32, 10);
  EXPECT_FALSE(torch::equal(other_seed.indices(0), DataOrder(100, 32, 9).indices(0)));
  DataOrder small(10, 32, 1);  // batch larger than the data: one batch of everything
  EXPECT_EQ(small.steps_per_epoch(), 1);
  EXPECT_EQ(small.indices(0).numel(), 10);
}

}  // namespace
}  // namespace blocklab

namespace blocklab {
namespace {

TEST(Png, RoundTripsGreyAndRgbExactly) {
  torch::manual_seed(4);
  for (const auto& image : {torch::randint(0, 256, {5, 7}, torch::kUInt8), torch::randint(0, 256, {4, 3, 3}, torch::kUInt8)}) {
    const auto bytes = png_bytes(image);
    EXPECT_EQ(bytes.substr(1, 3), "PNG");
    EXPECT_TRUE(torch::equal(decode_png(bytes, "mem"), image));
  }
  test::TempDir dir;
  const auto path = dir.file("grid.png");
  const auto image = torch::arange(12, torch::kUInt8).reshape({3, 4});
  write_png(path, image);
  EXPECT_TRUE(torch::equal(decode_png(test::read_bytes(path), path), image));
  EXPECT_TRUE(test::ThrowsUserError([&] { decode_png("not a png at all", "junk.png"); }, {"junk.png"}));
  auto cut = png_bytes(torch::randint(0, 256, {64, 64}, torch::kUInt8));
  cut.resize(cut.size() / 2);
  EXPECT_TRUE(test::ThrowsUserError([&] { decode_png(cut, "cut.png"); }, {"cut.png"}));
}

TEST(Png, GridPlacesImagesInRowsWithGaps) {
  // Three 2x2 grey images with values -1, 0, 1 over [-1, 1]: 0, 128 (127.5 rounded), 255.
  auto images = torch::stack({torch::full({1, 2, 2}, -1.0), torch::full({1, 2, 2}, 0.0), torch::full({1, 2, 2}, 1.0)});
  const auto grid = image_grid(images, /*columns=*/2, -1.0, 1.0, /*gap=*/1);
  ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{7, 7}));  // 2 rows and 2 columns of 2 pixels, gaps of 1
  EXPECT_EQ(grid[1][1].item<int>(), 0);
  EXPECT_EQ(grid[1][4].item<int>(), 128);
  EXPECT_EQ(grid[4][1].item<int>(), 255);
  EXPECT_EQ(grid[4][4].item<int>(), 0);  // the empty fourth cell
  EXPECT_EQ(grid[0][0].item<int>(), 0);  // border
  EXPECT_EQ(grid.sum().item<int64_t>(), 4 * 128 + 4 * 255);
  const auto rgb = image_grid(torch::ones({2, 3, 4, 5}) * 2.0, 1, 0.0, 1.0, 0);  // clipped to 255
  EXPECT_EQ(rgb.sizes(), (std::vector<int64_t>{8, 5, 3}));
  EXPECT_EQ(rgb.min().item<int>(), 255);
}

}  // namespace
}  // namespace blocklab
