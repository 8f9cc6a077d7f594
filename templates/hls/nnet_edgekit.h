// edgekit's integer layers for hls4ml: the IR's multi-threshold activation, requantization and
// residual add, computed on integer codes exactly as edgekit's integer contract defines them
// (docs/integer-contract.md), so the C-simulation equals edgekit's simulator bit for bit. Each
// layer has an io_parallel form (arrays) and an io_stream form (hls::stream of packets of
// data_T::size codes, channels last, so code i of the tensor has channel i % n_chan).
#ifndef NNET_EDGEKIT_H_
#define NNET_EDGEKIT_H_

#include "hls_stream.h"
#include "nnet_common.h"

namespace nnet {

// clamp(rshift_rne(x * m, s) + zero_point, lo, hi)  (contract.apply_requant, half_even):
// floor(p / 2^s) plus one when the remainder is above half, or exactly half and the floor is odd.
template <class multiplier_T, class shift_T>
ap_int<64> ek_rescale(ap_int<64> x, multiplier_T m, shift_T shift, int zero_point, int lo, int hi) {
    #pragma HLS INLINE
    const ap_int<64> p = x * m;
    const unsigned s = shift;
    ap_int<64> y = p;
    if (s > 0) {
        const ap_int<64> below_half = (ap_int<64>(1) << (s - 1)) - 1;
        y = (p + below_half + ((p >> s) & 1)) >> s;
    }
    y += zero_point;
    if (y < lo) y = lo;
    if (y > hi) y = hi;
    return y;
}

struct ek_threshold_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;  // thresholds per channel (channels last), or 1 set for all
    static const unsigned n_thr = 1;
    static const int out_min = 0;
    static const int step = 1;
    typedef ap_int<32> threshold_t;
};

// out_min + step * #{j : x >= T[c, j]}  (edgekit/ops/threshold.py)
template <class x_T, typename CONFIG_T>
int ek_threshold_one(x_T x, unsigned c, typename CONFIG_T::threshold_t thresholds[CONFIG_T::n_chan * CONFIG_T::n_thr]) {
    #pragma HLS INLINE
    int passed = 0;
    for (unsigned j = 0; j < CONFIG_T::n_thr; j++) {
        #pragma HLS UNROLL
        passed += x >= thresholds[c * CONFIG_T::n_thr + j] ? 1 : 0;
    }
    return CONFIG_T::out_min + CONFIG_T::step * passed;
}

template <class data_T, class res_T, typename CONFIG_T>
void ek_threshold(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                  typename CONFIG_T::threshold_t thresholds[CONFIG_T::n_chan * CONFIG_T::n_thr]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=thresholds complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        res[i] = ek_threshold_one<data_T, CONFIG_T>(data[i], CONFIG_T::n_chan == 1 ? 0 : i % CONFIG_T::n_chan,
                                                    thresholds);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void ek_threshold(hls::stream<data_T> &data, hls::stream<res_T> &res,
                  typename CONFIG_T::threshold_t thresholds[CONFIG_T::n_chan * CONFIG_T::n_thr]) {
    #pragma HLS ARRAY_PARTITION variable=thresholds complete
    for (unsigned p = 0; p < CONFIG_T::n_in / data_T::size; p++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned k = 0; k < data_T::size; k++) {
            #pragma HLS UNROLL
            const unsigned i = p * data_T::size + k;
            out[k] = ek_threshold_one<typename data_T::value_type, CONFIG_T>(
                in[k], CONFIG_T::n_chan == 1 ? 0 : i % CONFIG_T::n_chan, thresholds);
        }
        res.write(out);
    }
}

struct ek_requant_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;  // one multiplier and shift per channel, or 1 for all
    static const int zero_point_in = 0;  // a requantize node's input zero point (0 after a dense layer)
    static const int zero_point = 0;
    static const int lo = 0;
    static const int hi = 0;
    typedef ap_int<33> multiplier_t;
    typedef ap_uint<7> shift_t;
};

// y = clamp(rshift_rne((x - zero_point_in) * M[c], S[c]) + zero_point, lo, hi)
template <class data_T, class res_T, typename CONFIG_T>
void ek_requant(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                typename CONFIG_T::multiplier_t multiplier[CONFIG_T::n_chan],
                typename CONFIG_T::shift_t shift[CONFIG_T::n_chan]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=multiplier complete
    #pragma HLS ARRAY_PARTITION variable=shift complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        const unsigned c = CONFIG_T::n_chan == 1 ? 0 : i % CONFIG_T::n_chan;
        ap_int<64> x = data[i];
        res[i] = ek_rescale(x - CONFIG_T::zero_point_in, multiplier[c], shift[c], CONFIG_T::zero_point, CONFIG_T::lo,
                            CONFIG_T::hi).to_int();
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void ek_requant(hls::stream<data_T> &data, hls::stream<res_T> &res,
                typename CONFIG_T::multiplier_t multiplier[CONFIG_T::n_chan],
                typename CONFIG_T::shift_t shift[CONFIG_T::n_chan]) {
    #pragma HLS ARRAY_PARTITION variable=multiplier complete
    #pragma HLS ARRAY_PARTITION variable=shift complete
    for (unsigned p = 0; p < CONFIG_T::n_in / data_T::size; p++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned k = 0; k < data_T::size; k++) {
            #pragma HLS UNROLL
            const unsigned c = CONFIG_T::n_chan == 1 ? 0 : (p * data_T::size + k) % CONFIG_T::n_chan;
            ap_int<64> x = in[k];
            out[k] = ek_rescale(x - CONFIG_T::zero_point_in, multiplier[c], shift[c], CONFIG_T::zero_point,
                                CONFIG_T::lo, CONFIG_T::hi).to_int();
        }
        res.write(out);
    }
}

struct ek_add_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;  // multipliers and shifts per channel, or 1 for all
    static const int zero_point_a = 0;  // each input's zero point
    static const int zero_point_b = 0;
    static const int lo_a = 0, hi_a = 0, zero_point_ra = 0;  // each input's requantization onto the common scale
    static const int lo_b = 0, hi_b = 0, zero_point_rb = 0;
    static const bool requant = true;  // false: the int32 sum is the output
    static const int zero_point = 0;
    static const int lo = 0;
    static const int hi = 0;
    typedef ap_int<33> multiplier_t;
    typedef ap_uint<7> shift_t;
};

// residual add (edgekit/ops/add.py): rq(ra(a - zp_a) + rb(b - zp_b)), every step in 64-bit integers
template <class a_T, class b_T, typename CONFIG_T>
ap_int<64> ek_add_one(a_T a, b_T b, unsigned c, typename CONFIG_T::multiplier_t multiplier[3 * CONFIG_T::n_chan],
                      typename CONFIG_T::shift_t shift[3 * CONFIG_T::n_chan]) {
    #pragma HLS INLINE
    const unsigned n = CONFIG_T::n_chan;
    ap_int<64> xa = a, xb = b;
    const ap_int<64> sum = ek_rescale(xa - CONFIG_T::zero_point_a, multiplier[c], shift[c], CONFIG_T::zero_point_ra,
                                      CONFIG_T::lo_a, CONFIG_T::hi_a) +
                           ek_rescale(xb - CONFIG_T::zero_point_b, multiplier[n + c], shift[n + c],
                                      CONFIG_T::zero_point_rb, CONFIG_T::lo_b, CONFIG_T::hi_b);
    if (!CONFIG_T::requant) return sum;
    return ek_rescale(sum, multiplier[2 * n + c], shift[2 * n + c], CONFIG_T::zero_point, CONFIG_T::lo, CONFIG_T::hi);
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void ek_add(a_T a[CONFIG_T::n_in], b_T b[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
            typename CONFIG_T::multiplier_t multiplier[3 * CONFIG_T::n_chan],
            typename CONFIG_T::shift_t shift[3 * CONFIG_T::n_chan]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=multiplier complete
    #pragma HLS ARRAY_PARTITION variable=shift complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        res[i] = ek_add_one<a_T, b_T, CONFIG_T>(a[i], b[i], CONFIG_T::n_chan == 1 ? 0 : i % CONFIG_T::n_chan,
                                                multiplier, shift).to_int();
    }
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void ek_add(hls::stream<a_T> &a, hls::stream<b_T> &b, hls::stream<res_T> &res,
            typename CONFIG_T::multiplier_t multiplier[3 * CONFIG_T::n_chan],
            typename CONFIG_T::shift_t shift[3 * CONFIG_T::n_chan]) {
    #pragma HLS ARRAY_PARTITION variable=multiplier complete
    #pragma HLS ARRAY_PARTITION variable=shift complete
    for (unsigned p = 0; p < CONFIG_T::n_in / a_T::size; p++) {
        #pragma HLS PIPELINE
        a_T in_a = a.read();
        b_T in_b = b.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned k = 0; k < a_T::size; k++) {
            #pragma HLS UNROLL
            const unsigned c = CONFIG_T::n_chan == 1 ? 0 : (p * a_T::size + k) % CONFIG_T::n_chan;
            out[k] = ek_add_one<typename a_T::value_type, typename b_T::value_type, CONFIG_T>(in_a[k], in_b[k], c,
                                                                                             multiplier, shift)
                         .to_int();
        }
        res.write(out);
    }
}

} // namespace nnet

#endif
