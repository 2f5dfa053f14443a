#include "model/model.h"

#include "common/error.h"
#include "gguf/gguf.h"

namespace rwkv {

namespace {

std::string shape_string(const int64_t* ne, int n) {
  std::string s = "{";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "}";
}

// Reads the model's hyper-parameters and tensor views, checking each against the others.
class Loader {
 public:
  explicit Loader(const gguf::File& file) : file_(file) {}

  Hparams read_hparams() {
    if (!file_.find("general.architecture")) fail(ErrorCode::model, where() + "missing key 'general.architecture'");
    const std::string arch = file_.get_string("general.architecture");
    if (arch != "rwkv7")
      fail(ErrorCode::model,
           where() + "general.architecture is '" + arch + "', which is not supported (only 'rwkv7', RWKV-7 x070)");
    Hparams hp;
    hp.n_embd = positive("rwkv7.embedding_length");
    hp.n_layer = positive("rwkv7.block_count");
    hp.head_size = positive("rwkv7.wkv.head_size");
    hp.n_ffn = positive("rwkv7.feed_forward_length");
    hp.rank_w = positive("rwkv7.attention.decay_lora_rank");
    hp.rank_a = positive("rwkv7.attention.iclr_lora_rank");
    hp.rank_v = positive("rwkv7.attention.value_residual_mix_lora_rank");
    // The gate rank key is optional in llama.cpp: fall back to the tensor's shape.
    if (file_.find("rwkv7.attention.gate_lora_rank")) {
      hp.rank_g = positive("rwkv7.attention.gate_lora_rank");
    } else {
      const gguf::TensorInfo* g1 = file_.tensor("blk.0.time_mix_g1.weight");
      if (!g1 || g1->ne[1] < 1 || g1->ne[1] > (1 << 24))
        fail(ErrorCode::model,
             where() + "cannot determine the gate LoRA rank (no key, no usable blk.0.time_mix_g1.weight)");
      hp.rank_g = int(g1->ne[1]);
    }
    const int64_t shift = file_.get_int_or("rwkv7.token_shift_count", 2);
    if (shift != 2)
      fail(ErrorCode::model, where() + "rwkv7.token_shift_count is " + std::to_string(shift) + ", expected 2");
    hp.ln_eps = float(file_.get_real_or("rwkv7.attention.layer_norm_epsilon", 1e-5));
    if (!(hp.ln_eps > 0)) fail(ErrorCode::model, where() + "rwkv7.attention.layer_norm_epsilon must be > 0");
    if (hp.n_embd % hp.head_size != 0)
      fail(ErrorCode::model, where() + "embedding_length " + std::to_string(hp.n_embd) +
                                 " is not a multiple of wkv.head_size " + std::to_string(hp.head_size));
    hp.n_head = hp.n_embd / hp.head_size;
    hp.gn_eps = 1e-5f * float(hp.head_size);
    const gguf::TensorInfo* emb = file_.tensor("token_embd.weight");
    if (!emb) fail(ErrorCode::model, where() + "missing tensor 'token_embd.weight'");
    if (emb->ne[1] <= 0 || emb->ne[1] > INT32_MAX)
      fail(ErrorCode::model, where() + "tensor 'token_embd.weight' has a bad vocabulary dimension");
    hp.n_vocab = int(emb->ne[1]);
    return hp;
  }

  // A tensor that must exist with exactly this shape (trailing 1s may be omitted in the file).
  Weight get(const std::string& name, std::initializer_list<int64_t> shape, bool matrix_types = true) {
    const gguf::TensorInfo* t = file_.tensor(name);
    if (!t) fail(ErrorCode::model, where() + "missing tensor '" + name + "'");
    int64_t want[4] = {1, 1, 1, 1};
    int n = 0;
    for (int64_t d : shape) want[n++] = d;
    for (int i = 0; i < 4; ++i) {
      if (t->ne[i] != want[i])
        fail(ErrorCode::model, where() + "tensor '" + name + "' has shape " + shape_string(t->ne, int(t->n_dims)) +
                                   ", expected " + shape_string(want, n));
    }
    auto info = type_info(uint32_t(t->type));
    if (!info || !info->model_type)
      fail(ErrorCode::model, where() + "tensor '" + name + "' has type " + std::string(type_name(t->type)) +
                                 ", which this engine does not run");
    if (!matrix_types && t->type != TensorType::F32 && t->type != TensorType::F16 && t->type != TensorType::BF16)
      fail(ErrorCode::model,
           where() + "tensor '" + name + "' must be F32, F16 or BF16, not " + std::string(type_name(t->type)));
    Weight w;
    w.name = name;
    w.type = t->type;
    for (int i = 0; i < 4; ++i) w.ne[i] = t->ne[i];
    w.data = t->data;
    w.nbytes = size_t(t->nbytes);
    return w;
  }

 private:
  std::string where() const { return file_.path() + ": "; }
  int positive(const std::string& key) {
    const gguf::Value* v = file_.find(key);
    if (!v) fail(ErrorCode::model, where() + "missing key '" + key + "'");
    if (!v->is_integer()) fail(ErrorCode::model, where() + "key '" + key + "' is not an integer");
    if (v->integer <= 0 || v->integer > (1 << 24))
      fail(ErrorCode::model, where() + "key '" + key + "' = " + std::to_string(v->integer) + " is out of range");
    return int(v->integer);
  }

  const gguf::File& file_;
};

}  // namespace

std::shared_ptr<Model> Model::load(const std::string& path) { return from_gguf(gguf::File::open(path)); }

std::shared_ptr<Model> Model::from_gguf(std::shared_ptr<gguf::File> file) {
  auto m = std::make_shared<Model>();
  m->file_ = file;
  m->path_ = file->path();
  Loader ld(*file);
  const Hparams hp = ld.read_hparams();
  m->hp_ = hp;
  const int64_t C = hp.n_embd, V = hp.n_vocab, F = hp.n_ffn;
  m->tok_embd = ld.get("token_embd.weight", {C, V});
  m->embd_norm_w = ld.get("token_embd_norm.weight", {C}, false);
  m->embd_norm_b = ld.get("token_embd_norm.bias", {C}, false);
  m->out_norm_w = ld.get("output_norm.weight", {C}, false);
  m->out_norm_b = ld.get("output_norm.bias", {C}, false);
  m->head = ld.get("output.weight", {C, V});
  m->layers.resize(size_t(hp.n_layer));
  for (int l = 0; l < hp.n_layer; ++l) {
    LayerWeights& w = m->layers[size_t(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    w.att_norm_w = ld.get(p + "attn_norm.weight", {C}, false);
    w.att_norm_b = ld.get(p + "attn_norm.bias", {C}, false);
    w.ffn_norm_w = ld.get(p + "attn_norm_2.weight", {C}, false);
    w.ffn_norm_b = ld.get(p + "attn_norm_2.bias", {C}, false);
    w.lerp_fused = ld.get(p + "time_mix_lerp_fused.weight", {C, 1, 1, 6}, false);
    w.w0 = ld.get(p + "time_mix_w0.weight", {C}, false);
    w.w1 = ld.get(p + "time_mix_w1.weight", {C, hp.rank_w});
    w.w2 = ld.get(p + "time_mix_w2.weight", {hp.rank_w, C});
    w.a0 = ld.get(p + "time_mix_a0.weight", {C}, false);
    w.a1 = ld.get(p + "time_mix_a1.weight", {C, hp.rank_a});
    w.a2 = ld.get(p + "time_mix_a2.weight", {hp.rank_a, C});
    // Layer 0 carries dummy copies of a0/a1/a2 under the v names (spec P4): check, never use.
    const int64_t rv = l == 0 ? hp.rank_a : hp.rank_v;
    w.v0 = ld.get(p + "time_mix_v0.weight", {C}, false);
    w.v1 = ld.get(p + "time_mix_v1.weight", {C, rv});
    w.v2 = ld.get(p + "time_mix_v2.weight", {rv, C});
    w.g1 = ld.get(p + "time_mix_g1.weight", {C, hp.rank_g});
    w.g2 = ld.get(p + "time_mix_g2.weight", {hp.rank_g, C});
    w.k_k = ld.get(p + "time_mix_k_k.weight", {C}, false);
    w.k_a = ld.get(p + "time_mix_k_a.weight", {C}, false);
    w.r_k = ld.get(p + "time_mix_r_k.weight", {C}, false);
    w.wr = ld.get(p + "time_mix_receptance.weight", {C, C});
    w.wk = ld.get(p + "time_mix_key.weight", {C, C});
    w.wv = ld.get(p + "time_mix_value.weight", {C, C});
    w.wo = ld.get(p + "time_mix_output.weight", {C, C});
    w.lnx_w = ld.get(p + "time_mix_ln.weight", {C}, false);
    w.lnx_b = ld.get(p + "time_mix_ln.bias", {C}, false);
    // llama.cpp writes {C} but its loader also accepts {C,1,1}: both squeeze to {C}.
    w.ffn_lerp_k = ld.get(p + "channel_mix_lerp_k.weight", {C}, false);
    w.ffn_key = ld.get(p + "channel_mix_key.weight", {C, F});
    w.ffn_value = ld.get(p + "channel_mix_value.weight", {F, C});
  }
  return m;
}

std::vector<const Weight*> Model::all_weights() const {
  std::vector<const Weight*> out = {&tok_embd, &embd_norm_w, &embd_norm_b, &out_norm_w, &out_norm_b, &head};
  for (const LayerWeights& w : layers) {
    for (const Weight* p :
         {&w.att_norm_w, &w.att_norm_b, &w.ffn_norm_w, &w.ffn_norm_b, &w.lerp_fused, &w.w0,      &w.w1,
          &w.w2,         &w.a0,         &w.a1,         &w.a2,         &w.v0,         &w.v1,      &w.v2,
          &w.g1,         &w.g2,         &w.k_k,        &w.k_a,        &w.r_k,        &w.wr,      &w.wk,
          &w.wv,         &w.wo,         &w.lnx_w,      &w.lnx_b,      &w.ffn_lerp_k, &w.ffn_key, &w.ffn_value})
      out.push_back(p);
  }
  return out;
}

size_t Model::weight_bytes() const {
  size_t total = 0;
  for (const Weight* w : all_weights()) total += w->nbytes;
  return total;
}

}  // namespace rwkv
