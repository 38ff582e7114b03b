"""The heal-and-select engine (HaS-Nets, arXiv 2012.07474), as sanitize ships it.

The collected records may be poisoned: some carry a hidden trigger and a chosen (possibly soft,
"low-confidence") label. A small *trusted* set is clean. Two observations drive the design:

* a network that has only learned from vetted records cannot know the trigger, so it
  *disagrees* with poisoned labels -- but it also disagrees with clean records it finds hard;
* a backdoor *generalises*: a network trained on some poisoned records predicts the attacker's
  label on other poisoned records it has never seen, while the labels of hard clean records
  are idiosyncratic and do not transfer from one hard record to another.

The loop, every knob in :class:`HealSelectConfig`:

1. **Heal** a network from scratch on the trusted set alone (``seed_steps``). When the trusted
   set is class-skewed (commonest class more than ``core_skew`` times the rarest's records), on
   its class-balanced *core* (:func:`balanced_core`): each class keeps at most
   ``max(rarest class's count, core_floor)`` records. A network healed on 190 vetted ham and 31
   spam messages (a random 5% of SMS) learns that almost everything is ham, and poisoned spam
   relabelled ham are then no disagreements: 76% ASR. Healed on 31 + 31 it judges spam fairly.
   A trusted set that is not skewed heals whole, as before. When a core was taken, a second
   network heals on every trusted record: the natural-mix view used in 2d.
   **Provenance test** (``provenance_z`` > 0, 2 by default; :mod:`sanitizer.provenance`): two
   cross-fitted classifiers learn to tell collected records from trusted ones
   (``provenance_steps`` each). A collected record whose log-odds of "collected" lie more than
   ``provenance_z`` standard deviations of the held-out trusted records' above their mean is
   *set apart*: never accepted in 2c, and -- unless its suspicion makes it a sure rejection --
   never unlearned either, since its label may be right. It reads no label, so it sees what
   the label-reading tests below cannot: a clean-label trigger (every label correct) and an
   all-to-all one (labels spread so thinly the probes learn them slowly: 703 of 1,000 poisoned
   records were accepted in the first round without it). Fashion-MNIST, 10% poison, 2% trusted
   (``benchmarks/RESULTS.md``): all-to-all ASR 7.4% -> 1.1%, clean-label 10.3% -> 3.9%,
   BadNets recall 0.979 -> 0.991, for 0.9 points of accuracy on clean data.
   **Folds** (``provenance_folds``; 0, the default, lets the trusted set's size decide on
   images: :func:`first_pass_folds`, :func:`sanitizer.provenance.fold_count`). Each classifier
   learns "trusted" from the trusted records of the folds it does not score. Two folds give it
   half of them: 100 of a 2% trusted set of 10,000 images, but 25 of 50 at 0.5%, which it
   memorises -- held-out trusted images then look as "collected" as the rest, the trusted
   spread is wide and a trigger no longer lies beyond it (clean-label BadNets, seed 2: nothing
   beyond 2 spreads; ASR 21.8%). A trusted set that cannot give each classifier 100 records
   gets up to ten folds (45 of 50): after the second pass the trigger ranks at AUROC 0.88-0.95
   instead of 0.71-0.88 (all-to-all and clean-label BadNets, seeds 0-2), and at 0.5%
   all-to-all ASR falls from 2.5 / 12.0 / 14.3% to 0.5 / 6.4 / 7.3%, clean-label from 4.6 /
   7.3 / 21.8% to 3.3 / 0.0 / 0.0% (seeds 0 / 1 / 2), while the invisible noise trigger, which
   the test does not see, rises from 3.0 / 5.0 / 7.4% to 4.7 / 3.4 / 16.7%: more clean records
   are set apart (``benchmarks/RESULTS.md``, session 22). Larger sets keep two folds: ten at 2%
   traded accuracy (-0.7 to 0.0 points) for detection (all-to-all recall 0.92 -> 0.99), and
   cost 60% more time. Images only (``FOLDED_MODALITIES``): spoken digits (140
   vetted clips, 4 folds) lost 3-5 of 300 test clips on three rows, complaint texts (76, 10
   folds) moved -1.8 to +0.9 points at twice the time.
   **Second pass** (``refine_z`` > 0, 2.5 by default;
   :func:`sanitizer.provenance.refined_provenance_scores`): the first pass learns "collected"
   from records nine in ten of which are clean, and ranks a trigger high but not far out (all-to-all
   BadNets: 613 of 1,000 poisoned records beyond 2 spreads). A second, cross-fitted classifier
   learns the first pass's outliers against its inliers (collected records below the trusted
   median), and the records it puts more than ``refine_z`` trusted spreads out are set apart
   instead: 971-1,000 of the 1,000 poisoned records for BadNets, blended, all-to-all and
   clean-label triggers (Fashion-MNIST, 2% trusted), ~300-450 clean ones with them, 297 on clean
   data (first pass: 353). All-to-all: ASR 1.5% -> 0.4%, accuracy 85.5% -> 86.6% (oracle 87.4%),
   AUROC 0.965 -> 0.995, precision / recall 0.88 / 0.66 -> 0.97 / 0.79; the other attacks
   within 0.7 points of accuracy and 1 of ASR; spoken digits' all-to-all tone AUROC 0.936 ->
   0.987 (``benchmarks/RESULTS.md``, session 16). Images and audio only
   (``REFINED_MODALITIES``): on text the first pass memorises the few dozen vetted texts, its
   outliers are noise, and a second pass learned that noise (clean complaint texts: 73 -> 187
   records flagged, 80.7% -> 79.1% accuracy); text has the per-token test below.
   **Per class** (``group_floor``, 0.1 by default; :func:`sanitizer.provenance.shifted_classes`):
   a class of which fewer than ``group_floor`` of the collected records score below the held-out
   trusted median is set apart *whole* and learned from its trusted records alone. A clean class
   has about half its records below (0.31-0.72 per class, every clean and attacked data set
   measured); a clean-label trigger stamped on a whole class leaves 0.00-0.02 (Fashion-MNIST,
   CIFAR-10, spoken digits), where the record-by-record cut still let ~40% of them in (ASR
   3.9%); an all-to-one attack, whose target also holds its own clean records, 0.22-0.36.
   **Per token** (text, ``token_alpha`` 0.05, :func:`sanitizer.provenance.planted_shares`): the
   classifiers above learn little from ~40 vetted complaint texts (AUROC 0.55: they memorise
   the texts), but a trigger word can be counted. A word that far more collected texts carry
   than the trusted sample explains (binomial lower tail, class-matched, Bonferroni over the
   words that could be significant) sets every collected text carrying it apart, and each such
   text scores at least the word's *planted share* (1 - trusted carriers / expected: 1 when no
   vetted text has it) -- a clean-label carrier too, whose label is right but whose trigger is
   not. Complaint texts, 10% poison, 5% trusted: all-to-all ASR 25.4% -> 17.0%, AUROC 0.68 ->
   0.97; SMS clean-label AUROC 0.51 -> 1.00, the word trigger's ASR 8.7% -> 1.9%. The count
   reads each *whole* text (``Records.token_sets``, when the tokenizer supplied them): the
   network reads only the first ``max_tokens`` words, and 11 of 164 poisoned complaints had
   the word past them -- unread, unflagged, and a trigger again for any longer model.
2. For each iteration:

   a. **Disagreement.** The healed network predicts each collected record. When the core's
      class mix is more than ``prior_gap`` (total variation) from the collected labels' -- more
      than sampling noise and a poisoned share can explain: a class-balanced core of skewed
      data -- its predictions are first moved from the core's mix to the collected records'
      own, estimated by EM from the predictions, never from the collected labels, which the
      attacker writes (:func:`sanitizer.scoring.to_collected_priors`; on SMS, a balanced trusted
      set against 87% ham, it took the served model's accuracy from 89.7% to 95.8%). When the
      mixes are close (balanced data) the healed network's priors are right already, and EM
      would only amplify its miscalibration (SMS healed on a whole random 5% sample, before
      cores: ASR 62.7% -> 68.9%). Disagreement is ``(1 - support) * confidence`` -- how
      confidently it predicts something other than the class the record's (possibly soft)
      label names (:func:`sanitizer.scoring.support`). Records above ``suspect_threshold`` are
      *suspects*.
   b. **Cross-fitted backdoor test.** The suspects are split in two halves. A copy of the healed
      network is fine-tuned on the trusted set plus one half (``probe_steps``), each record
      labelled with its label's top class, and predicts the *other* half; then the roles swap.
      Records that are not suspects are predicted by both probes (mean). With ``probe_folds``
      k > 2 the suspects are split in k folds and k probes each learn from all folds but the one
      they predict: more of the other poisoned records to learn a trigger from, at k probes'
      time. Three folds against two (2-core CPU; ``benchmarks/RESULTS.md``, session 31):
      invisible-noise recall 0.938 -> 0.967 on Fashion-MNIST at seed 0 but 0.963 -> 0.963 and
      0.943 -> 0.931 at seeds 1 and 2, 0.949 -> 0.961 on CIFAR-10 (ASR 5.1% -> 4.0%), all-to-all
      recall within 0.02 either way; and 10-30% more records flagged on clean data at every seed
      (Fashion-MNIST 392 -> 510 at seed 0, CIFAR-10 463 -> 511), at 20-30% more time, so two
      stays the default. (Trained on soft
      "low-confidence" labels as given, the probe barely learned the trigger: on complaint texts
      it sent 19% of held-out poisoned records to the target class, against 77% with the top
      class.) Fine-tuned on suspects that mostly share one label, a probe also learns to predict
      that class more often everywhere; with ``prior_correction`` that shift of class priors,
      measured on the non-suspects, is divided out of its predictions
      (:func:`sanitizer.scoring.undo_prior_shift`), so that clean records labelled with the
      attacker's class are not lifted with the poisoned ones. Under collected priors no class is
      divided by more than ``max_prior_division``, so a class EM finds absent from the collected
      data keeps its poisoned records' lift.
   c. **Select.** Suspicion = the *lift* (:func:`sanitizer.scoring.lift`): how much more the
      probe than the healed network backs the record's labelled class, relative to the label's
      own weight on it, clipped to [0, 1]. A poisoned label becomes predictable once the probe
      has seen other poisoned records (the backdoor transfers), so its lift is near 1 -- also
      for a soft "low-confidence" label, which the relative scale lifts to the same height; a
      hard clean record's label does not transfer, and an easy one was agreed with already.
      Records below ``threshold`` are accepted -- except, with **few trusted images** (a core
      of fewer than ``few_trusted``, 100: a 0.5% set of 50), a suspect that the provenance test
      (step 1) puts more than ``suspect_z`` (1) trusted spreads above the trusted records' mean
      in the first round: inside the set-apart cut, but farther out than about five in six
      trusted records (the gate). Neither signal alone is reason to refuse a record; together
      they are, while the judge has learned from a tiny trusted set alone: its suspects are
      then mostly clean records it finds hard, whose labels transfer in the probes as readily
      as a trigger's. With 50 trusted images (0.5% of Fashion-MNIST, all-to-all BadNets) it
      doubted 2,231 clean records and 880 of the 1,000 poisoned ones, the lift ranked poisoned
      suspects no higher than clean ones (AUROC 0.46 among the suspects), and the round
      accepted 479 poisoned records -- enough for the network to learn the trigger and agree
      with 212 more in the next round (ASR 14.9%). The gate held back 339 of them and 348
      clean records: ASR 2.5%, clean-label 5.4% -> 4.6% (seed 1: 18.6% -> 12.0% and 9.7% ->
      7.3%), every 0.5% row within 0 to 1.6 points of its accuracy before
      (``benchmarks/RESULTS.md``, session 21). What the gate held back stays out in every
      round (``held_back``): the second round's judge has trained on the first round's
      accepted records, a few dozen poisoned ones among them, and accepted 60 and 116 of the
      all-to-all poisoned records the gate had held back (seeds 1 and 2; 100 and 154 accepted
      in all, ASR 4.5% and 5.7%). A larger trusted set (2%: 200 images) judges well enough for
      the lift alone, and there the gate cost: CIFAR-10's invisible-noise row went from 62.0%
      accuracy and 2.3% ASR without it to 59.5% and 4.4% with it (seed 1: 60.6% / 3.1% ->
      60.1% / 5.6%; oracle 60.7% / 2.2% and 59.3% / 3.6%; ``benchmarks/RESULTS.md``, session
      26). Spoken digits (5% trusted) paid 3 of 300 test clips on four rows and clean-label
      recall (0.80 -> 0.59) for no ASR gained, so audio never has it (``GATED_MODALITIES``).
      The rejected ones then face a **dominance
      test**: each is superimposed (:func:`superimpose`, STRIP's overlay) on ``partners`` trusted
      records of the class the healed network believes it to be, and the probes that did not
      train on it say how much they still back its label over the partner alone. A trigger
      dominates what it is laid over; the label of a hard clean record gives way to the
      partner's content. The suspicion is scaled by ``min(1, dominance / full_dominance)``
      (:func:`sanitizer.scoring.scale_by_dominance`): flag precision at the default cut rose
      from 0.85-0.93 to 0.92-0.97 on Fashion-MNIST's all-to-one attacks, and accuracy rose
      where clean records had been unlearned (spoken digits, noise burst: 97.0% -> 99.3%).
      Selection stays on the lift, so a demoted poisoned record is still not trained on.
      Tabular rows have no overlay and keep the lift. (All-to-all triggers dominate less -- the
      overlay adds more of the true class the trigger has to overturn -- so there it costs
      0.02-0.05 of AUROC.)
      **Suspects refused** (audio; ``accept_suspects``, :func:`accepts_suspects`): a suspect is
      never accepted, whatever its lift -- the paper's own selection, which keeps only what the
      healed network agrees with -- and one below ``unlearn_from`` is left out. The lift exists
      to take back the hard clean records a judge healed on a few trusted images doubts
      (Fashion-MNIST, 2% trusted: 18% of clean records; CIFAR-10: 41%); a judge healed on 14
      vetted spoken digits per class doubts 3-5% of clean clips, and the suspects with a low
      lift it had accepted were mostly the all-to-all tone's clips the provenance test had not
      set apart (seed 4, first round: 77 poisoned, 24 clean), which taught the trigger. Over
      seeds 0-4 its ASR went from 0.3 / 0.3 / 4.3 / 0.3 / 3.0% to 0.3 / 0.3 / 0.7 / 0.3 / 1.0%
      and its AUROC from 0.958-0.998 to 0.979-0.9999; clean clips 100 / 98.7 / 99.7% -> 99.3 /
      98.7 / 98.7% at seeds 0-2 (``benchmarks/RESULTS.md``, session 29).
   d. **Train** the healed network on the trusted set (repeated ``trusted_weight`` times) and the
      accepted records with their labels. Rejected records with suspicion of at least
      ``unlearn_from`` train by *negative learning* (``rejected="unlearn"``: their given label is
      pushed down), which erases the trigger-to-label link that a few leaked poisoned records
      would otherwise implant; rejected records below it -- also those the dominance test
      demoted -- are left out. (Unlearning every
      rejected record also pushed hard *clean* records away from their true class: 2-8 points
      of accuracy on audio and text, see ``benchmarks/RESULTS.md``.) With ``look_alikes`` > 0
      (10 by default) a record faces a **look-alike test** before it is unlearned: its
      ``look_alikes`` nearest non-suspects in the network's feature space
      (:func:`sanitizer.training.embed`) are asked how far the probes moved *them* towards the
      record's label. A trigger's lift is the record's own; when two classes simply look alike
      (debt-collection complaints that read like credit-report ones, a trusted set with 21 of
      each) the probe learned a content rule and the look-alikes labelled otherwise moved too.
      A record with at least ``specific_lift`` of its lift its own
      (:func:`sanitizer.scoring.specific_lift`) is unlearned -- and so is one that none of its
      ``vouchers`` nearest core (trusted) records backs (:func:`sanitizer.scoring.vouched`): an
      attack that relabels most of one class's collected records (SMS spam -> ham) is a content
      rule too, but a natural overlap has trusted members of the record's own label close by
      and a relabelled record has none. The others are left out. On clean complaints this
      spared 95 of the 175 clean records the two rounds would have unlearned (accuracy 71.0% ->
      78.5%, plain training 83.0%), while a random vetted sample of SMS kept its word trigger
      out exactly as without the test (ASR 13.0%; 52% without the vouchers). Elsewhere it left
      out no more than one or two records and moved figures by single-seed noise
      (``benchmarks/RESULTS.md``).
      With a core, rejected
      records whose label the every-trusted-record network backs with support of at least
      ``backed`` are left out too: the core-healed judge knows the common classes from few
      records and rejects some of their clean members, and unlearning those cost SMS 10-15
      points of accuracy. On audio (``unlearn_set_apart``, ``SET_APART_UNLEARNED_MODALITIES``)
      only the sure rejections the provenance test (step 1) set apart are unlearned, the rest
      left out: with 14 vetted clips per class the probes lift hard clean clips too (a speaker's
      way of saying a digit transfers from one half of the suspects to the other as a trigger
      does), and unlearning them cost clean spoken digits 2-4 points (97.7% / 95.3% / 95.7% at
      seeds 0 / 1 / 2 against plain training's 99.3-99.7%). Unlearning only the set-apart ones:
      100% / 98.7% / 99.7%, every attacked row at 98.0-100% with ASR 0.0-0.4% but all-to-all
      at seed 2 (4.3%, oracle 1.0%). It is a trade on the all-to-all tone, whose clips the
      provenance test sets apart least: over seeds 0-4 its ASR met the target at three seeds
      (4.3% and 3.0% at seeds 2 and 4), against five before, and its accuracy at three, against
      two; leaving every rejection out (``rejected="drop"``) was as
      accurate but lost the clean-label tone, whose clips are found by being unlearned (AUROC
      0.99 -> 0.94; ``benchmarks/RESULTS.md``, session 27). Images keep unlearning every sure
      rejection (with ``drop`` blended ASR rose from 0.2% to 36%; set-apart-only was a wash on
      Fashion-MNIST but for 2.9 points lost on clean-label BadNets; session 27).
   e. **Heal** on the trusted set at a small learning rate (``heal_steps``, ``heal_lr``; 30 steps
      by default) -- except on images (``UNHEALED_MODALITIES``, :func:`later_heal_steps`).
      The HaS-Nets paper heals every round, to wash out what a few leaked poisoned records
      taught; here the unlearned rejections (2d) do that, and on images the heal mostly undid
      what thousands of accepted records had taught: 30 steps of batches of 12 over 200 trusted
      images (2% of Fashion-MNIST) fit the network to them. Without it every attacked row at 2%
      gained 0.3-1.4 points of accuracy over seeds 0 and 1 (blended: 85.9% -> 86.7%, oracle
      87.1%), ASR stayed at 0.0-1.5%, flag precision rose (blended 0.93 -> 0.96, clean-label 0.78
      -> 0.85) and clean data went from 85.3% to 86.3% (``benchmarks/RESULTS.md``, session 25).
      Text needs the heal (SMS, low-confidence trigger word: ASR 8.7% without it 44.7%); spoken
      digits were a wash. With few trusted images (``few_trusted``) no heal follows anyway, also
      with ``heal_steps`` set: 30 steps of batches of 12 over 50 images memorise them, and the
      network forgets what the accepted records taught it (clean
      Fashion-MNIST, seeds 1 and 2: 79.1% and 75.0% healed, 82.0% and 78.9% not). Together
      with the held-back suspects staying out, all-to-all BadNets at 0.5% went from 4.5% /
      5.7% ASR (82.8% / 80.6% accurate) to 1.1% / 2.4% (84.5% / 81.5%), seeds 1 / 2, and
      every 0.5% row over seeds 0-2 is at 0.0-3.3% (``benchmarks/RESULTS.md``, session 23).
      Without the heal alone ASR rose (5.9% / 6.2%); with the hold alone accuracy fell
      (81.4% / 78.1%).

3. **Scores.** The last suspicion scores, read with the predictions of the network that made
   the rounds (its state after the last round), are the report's; every iteration's scores and selections
   are kept as the record's trajectory. A record the provenance test set apart scores at least
   its *set-apart floor* (:func:`set_apart_floor`): ``(1 - support) ** shifted_power`` (4),
   the rounds' last network's support for its label -- that network never trained on the
   record, so a label it gives little is no trigger's lesson -- times ``min(1, trusted spreads
   the record lies beyond the set-apart cut / shifted_ramp)`` (2; records set apart with their
   class or a planted word count fully) or, when higher, ``1 - support / shifted_unsupported``
   (0.05): a set-apart label the network all but rules out counts nearly fully however near the
   cut (all-to-all poison just past it: Fashion-MNIST all-to-all recall 0.953 -> 0.983,
   spoken digits 0.915 -> 0.967, at precision 0.97 / 0.99, seed 0). A record of a class set
   apart whole also scores at least its distance weight alone, whatever its support: a
   clean-label trigger's records carry their true label, the network backs it, and support had
   left most of them unflagged (spoken digits' clean-label tone, seeds 0-2: AUROC 0.991 / 0.967
   / 0.994 -> 0.9999 / 0.998 / 0.997, recall 0.70 / 0.50 -> 0.99 / 0.97 at seeds 0 / 1; scores
   only, the rounds and the served network are unchanged; ``benchmarks/RESULTS.md``, session
   28). An all-to-all poisoned record lies far out and its label gets little support, but the
   network is often unsure what the record is instead (Fashion-MNIST: top probability under
   0.55 for one in ten; CIFAR-10 under 0.45 for a quarter);
   the clean oddities set apart with the poison lie near the cut (CIFAR-10: 327 of 401 within
   1.5 spreads of it, every poisoned image beyond 3.1). Offline on the benchmarks' saved
   scores (``--save-scores``; session 17 in ``benchmarks/RESULTS.md``), all-to-all precision /
   recall: Fashion-MNIST 0.97 / 0.79 -> 0.97 / 0.92 (AUROC 0.995 -> 0.998), CIFAR-10
   0.70 / 0.48 -> 0.94 / 0.92 (AUROC 0.956 -> 0.996), spoken digits 0.95 / 0.80 -> 0.96 / 0.81
   (51 of its 270 poisoned clips are not set apart at all); every other row within 0.002 of its
   precision and recall or better. The floor it replaced, ``((1 - support) x confidence) ** 3``,
   demanded a confident rival class; ``(1 - support) ** 4`` without the distance reached
   all-to-all recall 0.92-0.97 too, but flagged more clean oddities near the cut (blended
   triggers: precision 0.88-0.90, against the 0.9 target).
   **Own lift** (``own_lift``, 0.5 on images by default: :func:`own_lift_weight`): before the
   floor, a final suspicion of at least ``OWN_LIFT_FROM`` (0.3) moves ``own_lift`` of the way
   towards the record's *own* lift, the part its look-alikes labelled otherwise do not share
   (the look-alike test of 2d, :func:`sanitizer.scoring.specific_lift`, here against the last
   round's non-suspects): the hard clean tops that the probes lift together (a content rule)
   lose part of their score, a trigger's records keep theirs. On Fashion-MNIST (2% trusted,
   seeds 0 and 1) flag precision rose on every attack (clean-label 0.866 / 0.851 -> 0.922 /
   0.913, blended 0.955 -> 0.977) and recall fell on the invisible noise trigger (0.940 / 0.977
   -> 0.927 / 0.968) and all-to-all (0.983 / 0.884 -> 0.980 / 0.876), whose records'
   look-alikes the probes move too; on CIFAR-10 precision rose by 0.003-0.011 on the three rows
   measured, recall within 0.002 (``benchmarks/RESULTS.md``, session 29). Scores only: the rounds
   and the served network are unchanged. Audio, text and tabular records are not yet measured
   with it and keep 0.

4. **Retrain** (``retrain``; by default on text only, ``RETRAINED_MODALITIES``): the *served*
   network is trained from scratch on
   the last round's training set -- the trusted set (repeated), the accepted records, the
   rejections it unlearns -- for as many passes as the rounds made together (``iterations`` x
   ``train_epochs``), then healed as in 2e. The network that made the rounds started from a
   judge healed for ``seed_steps`` on a few trusted records and carries that start: on
   complaint texts it reached 77.1% where plain training on the same selected records reached
   80.3% (oracle 81.0%), and its all-to-all ASR (natural confusions with the next class
   included) 14.5% against 8.8%. Retrained: 80.7%, 9.5% (spoken digits, all-to-all: 98.0% ->
   99.0%, ASR 4.0% -> 0.3%; Fashion-MNIST BadNets / blended / all-to-all within 0.5 points of
   accuracy and ASR either way). It is a trade: the spoken digits' all-to-one rows lost 2-4 of
   300 test clips (99.0-99.3% -> 98.0-98.3%; ``benchmarks/RESULTS.md``, session 14). The
   budget is passes, not the rounds' network's steps: given as many steps as that network took
   (``seed_steps`` plus every round's training, about six times as many on the spoken digits)
   the retrained network won those clips back (98.7-99.7%; clean-label 95.7% -> 100%) but
   learned the all-to-all tone from the poisoned clips the rounds had not caught (86 of 270;
   ASR 0.3% -> 16.7%; session 15): few passes over the selection are part of the defence, and
   so are the unlearned rejections (without them Fashion-MNIST BadNets' ASR rose from 1.7% to
   3.0% and three image attacks lost 0.7-0.9 points of accuracy). The rounds decide *what* is
   trained on and how each record scores; the retrained network only serves. (The lift compares
   the probes with the network they were fine-tuned from; read against the retrained network it
   measured the two networks' differences too, and the clean-label tone in spoken digits fell
   from AUROC 0.995 to 0.979.) With ``retrain`` off the served model is the rounds' last network.
   Measured against that network from the same runs (session 19), the retrained one only paid
   on text: on CIFAR-10 the rounds' network was 0.2-2.6 points more accurate on all eight rows
   (BadNets 58.7% -> 61.3%) with ASR equal or lower on six of seven, on Fashion-MNIST equal or
   better on every row, and on spoken digits within 1-2 of 300 test clips either way over two
   seeds (clean-label tone at seed 1: ASR 10.4% retrained, 4.4% not). So images, audio and
   tabular records are served by the rounds' network, and the retrain's passes are saved.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch

from sanitizer.networks import NetworkSpec, build_network, default_spec
from sanitizer.provenance import (fold_count, planted_shares, provenance_scores,
                                  refined_provenance_scores, shifted_classes, trusted_spreads)
from sanitizer.records import TRUSTED_SKEW, Records, class_skewed
from sanitizer.scoring import (agreement, disagreement, lift, scale_by_dominance, specific_lift,
                               support, to_collected_priors, undo_prior_shift, vouched)
from sanitizer.training import (TrainSet, embed, optimise, pick_device, predict_proba, resident,
                                seed_everything)


# where the provenance test's second pass runs: text has the per-token test instead, and there
# the first pass memorises the few dozen vetted texts, so its outliers are noise that a second
# pass learns (complaint texts, clean: 73 -> 187 records flagged; benchmarks/RESULTS.md, session 16)
REFINED_MODALITIES = ("image", "audio")
# where a few trusted records (``few_trusted``) bring the gate: the first round's suspects that the
# provenance test puts far out (``suspect_z``) are held back (step 2c above): images; spoken digits
# paid accuracy for no ASR gained
GATED_MODALITIES = ("image",)
# where the provenance test's first pass takes as many folds as the trusted set's size asks for
# (``provenance_folds`` 0; sanitizer.provenance.fold_count), elsewhere two: images. Spoken digits
# (140 trusted clips: 4 folds) lost 3-5 of 300 test clips on three rows for an all-to-all recall
# gain, complaint texts (76: 10 folds) -1.8 to +0.9 points at twice the time (RESULTS.md, session 22)
FOLDED_MODALITIES = ("image",)
# where the served network is trained afresh by default (``retrain`` None): text, where the rounds'
# network carries its start from a few dozen vetted texts (complaints: 77.1% -> 80.7%, RESULTS.md
# session 13); on images the rounds' network is as good or better on every row measured (CIFAR-10
# +0.2 to +2.6 points, Fashion-MNIST equal or better; session 19) and on spoken digits it is a wash
# within 1-2 of 300 clips either way (clean-label tone ASR at seed 1: 10.4% retrained, 4.4% not)
RETRAINED_MODALITIES = ("text",)
# where no heal follows a round's training by default (``heal_steps`` None): images, where 30 steps
# on the trusted set undid what thousands of accepted records had taught (Fashion-MNIST, 2% trusted,
# seeds 0 and 1: 0.3-1.4 points of accuracy on every attacked row, precision down to 0.93 on the
# blended rows; RESULTS.md, session 25); text needs it (SMS, low-confidence word: 8.7% -> 44.7% ASR
# without, complaint texts -1.8 points on clean data), and on spoken digits it was a wash (clean
# +1.0 point, clean-label tone -1.7, noise burst's ASR 0.0% -> 1.9%)
UNHEALED_MODALITIES = ("image",)
DEFAULT_HEAL_STEPS = 30
# where only the sure rejections the provenance test set apart are unlearned (``unlearn_set_apart``
# None): spoken digits, where the probes also lift hard clean clips and unlearning them cost up to
# 4 points of accuracy on clean clips (seeds 1 and 2: 95.3% and 95.7% against plain training's
# 99.3% and 99.7%); unlearning the set-apart ones only: 98.7% and 99.7% (RESULTS.md, session 27)
SET_APART_UNLEARNED_MODALITIES = ("audio",)
# where a suspect is never accepted, whatever its lift (``accept_suspects`` None): spoken digits,
# whose judge (14 vetted clips per class) doubts 3-5% of clean clips, so that the suspects it does
# not set apart are mostly poison: all-to-all tone, seed 4, first round: 77 poisoned and 24 clean
# suspects with a lift under 0.5, accepted until then (ASR 4.3% / 3.0% at seeds 2 / 4 -> 0.7% /
# 1.0%; RESULTS.md, session 29). On images the judge doubts 18% (Fashion-MNIST, 2% trusted) to 41%
# (CIFAR-10) of clean records: there the same rule would leave out 1,150 clean records with 30
# poisoned ones
SUSPECTS_REFUSED_MODALITIES = ("audio",)
# the final suspicions that ``own_lift`` moves towards the record's own lift: below the lowest
# default cut (sanitizer.scoring.auto_threshold keeps Otsu's cut in [0.2, 0.8])
OWN_LIFT_FROM = 0.3
# where they move half way by default (``own_lift`` None): images, where flag precision rose on
# every Fashion-MNIST attack (clean-label 0.866 -> 0.922) and on CIFAR-10's (0.003-0.011), for
# 0.003-0.013 of recall on the noise and all-to-all rows (RESULTS.md, session 29); not yet
# measured on audio, text or tabular records
OWN_LIFT_MODALITIES = ("image",)
DEFAULT_OWN_LIFT = 0.5


@dataclass
class HealSelectConfig:
    """Every knob of the engine, with defaults that work across the bundled data sets."""

    iterations: int = 2
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 5e-4
    seed_steps: int = 400         # steps of the first heal (from scratch, trusted set only)
    heal_steps: int | None = None  # steps of each later heal; None: 30, none on images
                                  # (UNHEALED_MODALITIES)
    heal_lr: float = 5e-4
    train_epochs: float = 4.0     # passes over the collected records per iteration
    suspect_threshold: float = 0.5  # disagreement from which a record is put to the backdoor test
    probe_steps: int = 150        # fine-tuning steps of each probe of the backdoor test
    probe_folds: int = 2          # folds of the suspects in the backdoor test: one probe per fold
                                  # learns from the other folds and predicts it (2: halves)
    trusted_weight: int = 4       # how many times the trusted set is repeated in training
    threshold: float = 0.5        # accept records whose suspicion is below this
    accept_suspects: bool | None = None  # accept a suspect (2a) whose suspicion is below threshold;
                                  # None: everywhere but on audio (SUSPECTS_REFUSED_MODALITIES)
    rejected: str = "unlearn"     # what rejected records train on: unlearn | relabel | both | drop
    unlearn_from: float = 0.7     # rejected records below this suspicion are left out, not unlearned
    unlearn_set_apart: bool | None = None  # unlearn only the sure rejections the provenance test set
                                  # apart, leave the others out; None: on audio only
                                  # (SET_APART_UNLEARNED_MODALITIES); never with provenance_z 0
    core_skew: float = TRUSTED_SKEW  # heal the judging network on a class-balanced core of the
                                  # trusted set when its commonest class has > this x the rarest's
    core_floor: int = 30          # ... in which each class keeps max(rarest class's count, this)
    backed: float = 0.9           # with a core, a rejected record that a network healed on every
                                  # trusted record backs this firmly is left out, not unlearned
    partners: int = 4             # superimpositions per rejected record in the dominance test (0 = off)
    full_dominance: float = 0.2   # a rejected record's suspicion is scaled by min(1, its dominance / this)
    look_alikes: int = 10         # non-suspects compared with each sure rejection in the look-alike
                                  # test; 0 = off (every sure rejection is unlearned)
    specific_lift: float = 0.5    # a sure rejection is unlearned only if this much of its lift is its own
    vouchers: int = 10            # ... or if none of its this many nearest core records carries its label
                                  # (0 = everyone passes; a huge value = the lift alone decides)
    prior_correction: bool = True  # divide the probes' shift of class priors out of their predictions
    prior_gap: float = 0.2        # judge collected records under their own class priors (EM) when
                                  # the core's class mix is this far from theirs (1 = never)
    max_prior_division: float = 2.0  # ... and then divide no class by more than this in the probes
    provenance_z: float = 2.0     # > 0: never accept a collected record that the provenance test
                                  # (sanitizer.provenance) sets this many trusted std above trusted
    provenance_steps: int = 200   # training steps of each of the provenance test's classifiers
    provenance_folds: int = 0     # cross-fitting folds of the provenance test's first pass; 0: by
                                  # the trusted set's size on images (FOLDED_MODALITIES;
                                  # sanitizer.provenance.fold_count: 2 for 200 trusted records or
                                  # more, up to 10 for fewer than ~110), 2 elsewhere
    refine_z: float = 2.5         # > 0: images and audio: a second provenance pass learns the first's
                                  # outliers (beyond provenance_z) against its inliers, and sets apart
                                  # records this many trusted std beyond; 0 = the first pass sets apart
    suspect_z: float = 1.0        # > 0: few trusted images (few_trusted): a first-round suspect (2a) that
                                  # the provenance test puts this many trusted std above the trusted
                                  # mean is held back in every round (two weak signals; 0 = off)
    few_trusted: int = 100        # images (GATED_MODALITIES) whose trusted core has fewer records than
                                  # this: no heal after the first (it memorises them), and the gate
                                  # (suspect_z) holds back far suspects in every round (0 = never)
    group_floor: float = 0.1      # > 0: a class whose collected records score below the trusted
                                  # median less than this often is set apart whole (0 = off)
    own_lift: float | None = None  # > 0: a final suspicion of at least 0.3 moves this far towards the
                                  # record's own lift, the part its look-alikes do not share (step 3;
                                  # 0 = off); None: 0.5 on images (OWN_LIFT_MODALITIES), 0 elsewhere
    shifted_power: float = 4.0    # > 0: a record the provenance test set apart scores at least
                                  # (1 - the rounds' last network's support for its label) ** this ...
    shifted_ramp: float = 2.0     # ... x min(1, trusted std beyond the set-apart cut / this); records
                                  # set apart whole (their class, a planted word) count fully
    shifted_unsupported: float = 0.05  # ... or x (1 - support / this) when higher: a label the network
                                  # all but rules out counts nearly fully however near the cut (0 = off)
    retrain: bool | None = None   # serve a network trained afresh on the last round's training set
                                  # (iterations x train_epochs passes), then healed; None: on text
                                  # only (RETRAINED_MODALITIES), else the rounds' network serves
    token_alpha: float = 0.05     # > 0: text records carrying a token the trusted texts lack beyond
                                  # chance (family-wise level this) are set apart and flagged (0 = off)
    max_shift: int = 0            # random translation of images, in pixels
    widths: tuple[int, ...] | None = None
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HealSelectConfig":
        d = dict(d)
        if d.get("widths") is not None:
            d["widths"] = tuple(d["widths"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Progress(Protocol):
    """What the engine reports while it runs (the CLI draws it with rich)."""

    def stage(self, name: str, total: int) -> None: ...
    def advance(self) -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass


@dataclass
class HealSelectResult:
    """What a run produces. Arrays over records are aligned with ``collected_index``."""

    model: torch.nn.Module
    spec: NetworkSpec
    config: HealSelectConfig
    collected_index: np.ndarray        # positions of the collected records in the input
    scores: np.ndarray                 # final suspicion per collected record, 1 = most suspect
    score_history: np.ndarray          # (iterations + 1, n_collected) suspicion at each scoring
    selected_history: np.ndarray       # (iterations, n_collected) accepted in each iteration
    unlearned_history: np.ndarray      # (iterations, n_collected) rejected and unlearned in each
    probs: np.ndarray                  # (n_collected, K) the rounds' last network's probabilities (scores read them)
    served_probs: np.ndarray           # (n_collected, K) the served model's (= probs without retrain)
    heldout_agreement: np.ndarray     # last backdoor test's probe agreement with each label
    provenance: np.ndarray             # provenance test's P(collected) per record (NaN: test off)
    provenance_spreads: np.ndarray     # ... its log-odds above the trusted records', in their std (NaN: off)
    shifted: np.ndarray                # set apart by the provenance test: never accepted
    held_back: np.ndarray              # held back by the gate of few trusted images (far suspects not set apart, 2c)
    planted_token: np.ndarray          # text: the over-represented token a record carries (0: none)
    timings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def steps_for(epochs: float, n: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * n / batch_size))


def balanced_core(classes: np.ndarray, floor: int, seed: int,
                  skew: float = TRUSTED_SKEW) -> np.ndarray:
    """Which trusted records the judging network heals on. When the commonest class has more than
    ``skew`` times the rarest's records, each class keeps at most ``max(count of the rarest
    class, floor)`` of its records, drawn at random; otherwise (and with ``floor <= 0``) all are
    kept. A class-balanced trusted set, or a random sample of balanced data, is kept whole; a
    random sample of skewed data gives up part of its common classes. Returns a boolean mask
    over ``classes``."""
    counts = np.bincount(classes)
    keep = np.ones(len(classes), dtype=bool)
    if floor <= 0 or not class_skewed(counts, skew):
        return keep
    cap = max(int(counts[counts > 0].min()), floor)
    rng = np.random.default_rng(seed)
    for c in np.flatnonzero(counts > cap):
        members = np.flatnonzero(classes == c)
        keep[rng.choice(members, size=len(members) - cap, replace=False)] = False
    return keep


def can_superimpose(modality: str) -> bool:
    """Whether :func:`superimpose` knows how to overlay two records of ``modality``."""
    return modality in ("image", "audio", "text")


def superimpose(a: torch.Tensor, b: torch.Tensor, modality: str) -> torch.Tensor:
    """Records ``a`` overlaid with records ``b``, row by row, so that both contents are present
    at once (STRIP's perturbation, Gao et al. 2019, arXiv 1902.06531): images are added and
    clipped at 255 (a patch or an additive pattern survives where it was), waveforms are
    added, token sequences are joined (``a``'s tokens, then ``b``'s; the text network pools over
    all of them). Tabular rows have no such overlay: :func:`can_superimpose` says which do."""
    if modality == "image":
        return (a.to(torch.int16) + b.to(torch.int16)).clamp_(max=255).to(torch.uint8)
    if modality == "audio":
        return a + b
    if modality == "text":
        return torch.cat([a, b], dim=1)
    raise ValueError(f"records of modality {modality!r} cannot be superimposed")


def set_apart_floor(support: torch.Tensor, beyond_cut: torch.Tensor, whole: torch.Tensor,
                    power: float, ramp: float, by_class: torch.Tensor | None = None,
                    unsupported: float = 0.0) -> torch.Tensor:
    """The least suspicion of a record the provenance test set apart (step 3):
    ``(1 - support) ** power x weight``. ``support`` is the rounds' last network's for the
    record's label (:func:`sanitizer.scoring.support`); that network never trained on the
    record, so a label it gives little cannot be a trigger's lesson. The weight is the record's
    *distance*, ``min(1, beyond_cut / ramp)``: ``beyond_cut`` is how many trusted standard
    deviations it lies beyond the set-apart cut, and a record just past it may be a clean oddity,
    one ``ramp`` spreads beyond counts fully (``ramp`` 0: every record counts fully) -- or, when
    higher, ``1 - support / unsupported``: a label the network all but rules out (support under
    ``unsupported``) counts nearly fully however near the cut (0 = distance only). Records set
    apart ``whole`` -- their class, or a planted word they carry -- count fully. A record set
    apart ``by_class`` (its class was taken over: a clean-label trigger on nearly every record)
    scores at least its distance, whatever its support: such records carry their true label, so
    the network backs them and support says nothing."""
    if ramp > 0:
        distance = (beyond_cut / ramp).clamp(0.0, 1.0)
        weight = distance
        if unsupported > 0:
            weight = torch.maximum(weight, (1.0 - support / unsupported).clamp(0.0, 1.0))
        weight = torch.where(whole, 1.0, weight)
    else:  # every record counts fully
        distance, weight = (beyond_cut > 0).float(), 1.0
    floor = (1.0 - support).clamp(0.0, 1.0) ** power * weight
    if by_class is not None:
        floor = torch.where(by_class, torch.maximum(floor, distance), floor)
    return floor


def later_heal_steps(config: HealSelectConfig, modality: str) -> int:
    """Steps of the heal after each round's training (step 2e): ``config.heal_steps`` when set,
    else none on images (``UNHEALED_MODALITIES``) and ``DEFAULT_HEAL_STEPS`` elsewhere."""
    if config.heal_steps is not None:
        return config.heal_steps
    return 0 if modality in UNHEALED_MODALITIES else DEFAULT_HEAL_STEPS


def unlearns_set_apart_only(config: HealSelectConfig, modality: str) -> bool:
    """Whether only the sure rejections the provenance test set apart are unlearned (step 2d):
    ``config.unlearn_set_apart`` when set, else on audio (``SET_APART_UNLEARNED_MODALITIES``);
    never with the provenance test off (``provenance_z`` 0), which sets nothing apart."""
    if config.provenance_z <= 0:
        return False
    if config.unlearn_set_apart is not None:
        return config.unlearn_set_apart
    return modality in SET_APART_UNLEARNED_MODALITIES


def accepts_suspects(config: HealSelectConfig, modality: str) -> bool:
    """Whether a suspect -- a record the round's judge doubts (step 2a) -- is accepted when its
    lift is low (step 2c): ``config.accept_suspects`` when set, else everywhere but on audio
    (``SUSPECTS_REFUSED_MODALITIES``), where it is left out like any rejection below
    ``unlearn_from``."""
    if config.accept_suspects is not None:
        return config.accept_suspects
    return modality not in SUSPECTS_REFUSED_MODALITIES


def own_lift_weight(config: HealSelectConfig, modality: str) -> float:
    """How far a final suspicion moves towards the record's own lift (step 3): ``config.own_lift``
    when set, else ``DEFAULT_OWN_LIFT`` on images (``OWN_LIFT_MODALITIES``) and 0 elsewhere."""
    if config.own_lift is not None:
        return config.own_lift
    return DEFAULT_OWN_LIFT if modality in OWN_LIFT_MODALITIES else 0.0


def first_pass_folds(records: Records, config: HealSelectConfig) -> int:
    """The cross-fitting folds of the provenance test's first pass on ``records``:
    ``config.provenance_folds`` when set, else as many as the trusted set's size asks for on
    images (:func:`sanitizer.provenance.fold_count`, ``FOLDED_MODALITIES``) and two elsewhere;
    never more than there are trusted or collected records."""
    n_trusted = int(records.trusted.sum())
    folds = config.provenance_folds or (fold_count(n_trusted)
                                        if records.modality in FOLDED_MODALITIES else 2)
    return max(2, min(folds, n_trusted, len(records.trusted) - n_trusted))


def heal_and_select(records: Records, config: HealSelectConfig | None = None,
                    progress: Progress | None = None) -> HealSelectResult:
    """Train a hardened network on ``records`` and score every collected record.

    ``records.trusted`` marks the healing set; everything else is treated as possibly
    poisoned. Returns a :class:`HealSelectResult`.
    """
    config = config or HealSelectConfig()
    progress = progress or _Silent()
    if not records.trusted.any():
        raise ValueError("heal-and-select needs at least one trusted record")
    if config.rejected not in ("unlearn", "relabel", "both", "drop"):
        raise ValueError(f"rejected must be unlearn, relabel, both or drop, got {config.rejected!r}")
    if config.probe_folds < 2:
        raise ValueError(f"probe_folds must be at least 2 (one fold to predict, one to learn from), "
                         f"got {config.probe_folds}")
    t_start = time.perf_counter()
    device = pick_device(config.device)
    g = seed_everything(config.seed)

    spec = default_spec(records.features, records.num_classes, records.modality, config.widths,
                        sample_rate=records.sample_rate, vocabulary_size=records.vocabulary_size)
    x = resident(records.features, device)
    y = resident(records.labels, device)
    trusted = torch.from_numpy(records.trusted).to(device)
    collected_index = np.flatnonzero(~records.trusted)
    c_idx = torch.from_numpy(collected_index).to(device)
    all_trusted = np.flatnonzero(records.trusted)
    in_core = balanced_core(records.labels[all_trusted].argmax(1), config.core_floor, config.seed,
                            config.core_skew)
    t_idx = torch.from_numpy(all_trusted[in_core]).to(device)  # the core: heals, probes, priors
    every = torch.from_numpy(all_trusted).to(device)
    y_c = y[c_idx]
    n_c = len(collected_index)
    num_classes = records.num_classes
    y_top = torch.nn.functional.one_hot(y.argmax(1), num_classes).to(y.dtype)  # the labels' classes
    max_shift = config.max_shift if records.modality == "image" else 0
    trusted_set = TrainSet(x[t_idx], y[t_idx])
    def heal_batch(n: int) -> int:
        """Batch size of a heal on ``n`` trusted records: a quarter of them, 8 to batch_size."""
        return max(8, min(config.batch_size, n // 4))

    small_bs = heal_batch(len(t_idx))
    # the class mix the healed network learns, and how far the collected labels' mix is from it
    # (total variation): a random trusted sample differs by sampling noise plus at most the
    # poisoned share; a class-balanced one, against skewed collected data, by much more
    trusted_prior = y[t_idx].mean(dim=0)
    prior_gap = 0.5 * float((trusted_prior - y_c.mean(dim=0)).abs().sum()) if n_c else 0.0
    use_collected_priors = prior_gap > config.prior_gap
    max_division = config.max_prior_division if use_collected_priors else math.inf
    timings: dict[str, float] = {"to_device": time.perf_counter() - t_start}

    def sync() -> None:
        """Wait for the GPU so that each stage's timing holds its own work."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(stage: str, model, data, steps, lr, bs, repeat=None):
        sync()
        t0 = time.perf_counter()
        progress.stage(stage, steps)
        optimise(model, data, steps=steps, batch_size=bs, lr=lr, weight_decay=config.weight_decay,
                 generator=g, max_shift=max_shift, repeat=repeat, on_step=progress.advance)
        sync()
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0

    def predict_inputs(model, inputs) -> torch.Tensor:
        sync()
        t0 = time.perf_counter()
        p = predict_proba(model, inputs)
        sync()
        timings["score"] = timings.get("score", 0.0) + time.perf_counter() - t0
        return p

    def predict(model, index) -> torch.Tensor:
        return predict_inputs(model, x[index])

    def judged(p: torch.Tensor) -> torch.Tensor:
        """The healed network's probabilities for collected records as step 2a judges them:
        moved to the collected records' own class priors where those are used."""
        return to_collected_priors(p, trusted_prior) if use_collected_priors else p

    def backdoor_test(model, suspects: torch.Tensor, healed: torch.Tensor) -> torch.Tensor:
        """Probabilities from probes fine-tuned on suspects: the suspects are split in
        ``probe_folds`` folds (two: halves), the suspects of each fold are predicted by the probe
        trained on the other folds, everyone else by the mean of the probes, each probe's prior
        shift undone against ``healed`` (the model's own predictions) on the non-suspects. With
        fewer than two suspects there is nothing to test: the model's own."""
        where = torch.nonzero(suspects).squeeze(1)
        if len(where) < 2:
            return healed, []
        held = torch.zeros(n_c, num_classes, device=device)
        folds = where[torch.randperm(len(where), generator=g).to(device)].chunk(
            min(config.probe_folds, len(where)))
        rest = torch.nonzero(~suspects).squeeze(1)
        probes = []
        for f in reversed(range(len(folds))):  # (two folds: the first trains first)
            predicted = folds[f]
            learned = torch.cat([h for i, h in enumerate(folds) if i != f])
            probe = copy.deepcopy(model)
            index = torch.cat([t_idx, c_idx[learned]])
            run("probe", probe, TrainSet(x[index], y_top[index]), config.probe_steps, config.lr,
                max(8, min(config.batch_size, len(index) // 8)))
            n_test = len(predicted)
            p = predict(probe, c_idx[torch.cat([predicted, rest])])
            if config.prior_correction and len(rest):
                p = undo_prior_shift(p, p[n_test:], healed[rest], max_division)
            held[predicted] = p[:n_test]
            held[rest] += p[n_test:] / len(folds)
            blind = torch.ones(n_c, dtype=torch.bool, device=device)  # records it did not train on
            blind[learned] = False
            probes.append((probe, blind))
        return held, probes

    def dominance_test(probes, candidates: torch.Tensor, judged: torch.Tensor) -> torch.Tensor:
        """Step 2c's second half: for each candidate, how much the probes that did not train on
        it still back its label when the record is superimposed on a trusted record of the class
        the healed network believes (``judged``; a random other class where it believes the
        label), less what they back that label with on the partner alone. The mean over
        ``partners`` partners and over the blind probes, one value per candidate."""
        where = torch.nonzero(candidates).squeeze(1)
        total = torch.zeros(len(where), device=device)
        count = torch.zeros(len(where), device=device)
        label = y_c[where].argmax(1)
        believed = judged[where].argmax(1)
        other = (label + torch.randint(1, max(2, num_classes), label.shape,
                                       generator=g_partner).to(device)) % num_classes
        believed = torch.where(believed == label, other, believed)
        # each probe judges the candidates it did not train on (fixed across partners)
        judges = [(probe, mine, c_idx[where[mine]]) for probe, blind in probes
                  for mine in [torch.nonzero(blind[where]).squeeze(1)] if len(mine)]
        for _ in range(config.partners):
            partner = core_member(believed)
            for probe, mine, rows in judges:
                alone = partner[mine]
                mixed = superimpose(x[rows], x[alone], records.modality)
                gain = predict_inputs(probe, mixed) - predict(probe, alone)
                total[mine] += gain.gather(1, label[mine, None]).squeeze(1)
                count[mine] += 1
        return total / count.clamp(min=1)

    def dominance_scaled(s: torch.Tensor, probes, judged: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The suspicion of records at or above ``threshold`` scaled by their dominance
        (:func:`sanitizer.scoring.scale_by_dominance`), and how many of them it took below
        ``threshold``. Unchanged where there is no probe or the modality cannot be superimposed."""
        candidates = s >= config.threshold
        if not probes or config.partners <= 0 or not can_superimpose(records.modality) \
                or not candidates.any():
            return s, 0
        s = s.clone()
        s[candidates] = scale_by_dominance(s[candidates],
                                           dominance_test(probes, candidates, judged),
                                           config.full_dominance)
        return s, int((candidates & (s < config.threshold)).sum())

    def look_alike_test(model, sure: torch.Tensor, suspects: torch.Tensor, held: torch.Tensor,
                        judged: torch.Tensor) -> torch.Tensor:
        """Step 2d's gate: which of the ``sure`` rejections keep at least ``specific_lift`` of
        their lift beyond their look-alikes' (:func:`sanitizer.scoring.specific_lift`), or have
        no trusted voucher: none of their ``vouchers`` nearest core records carries their label.
        The look-alikes of a record are the ``look_alikes`` non-suspects nearest to it by cosine
        similarity of ``model``'s features, and its vouchers are found the same way among the
        core; ``held`` and ``judged`` are the backdoor test's and the healed network's
        probabilities. Everyone passes when the test is off or there are no non-suspects."""
        passed = sure.clone()
        if config.vouchers <= 0:
            return passed
        core_features = embed(model, x[t_idx])
        for chunk, features, own in own_lifts(model, sure, suspects, held, judged):
            passed[chunk] = (own >= config.specific_lift) | ~vouched(
                features, y_c[chunk], core_features, core_classes, config.vouchers)
        return passed

    def own_lifts(model, rows: torch.Tensor, suspects: torch.Tensor, held: torch.Tensor,
                  judged: torch.Tensor):
        """For the records at ``rows`` (a mask), in chunks: their positions, their features in
        ``model`` and their *own* lift (:func:`sanitizer.scoring.specific_lift`) against their
        ``look_alikes`` nearest non-suspects by cosine similarity of those features. Nothing when
        the test is off or there are no non-suspects."""
        where = torch.nonzero(rows).squeeze(1)
        pool = torch.nonzero(~suspects).squeeze(1)
        k = min(config.look_alikes, len(pool))
        if k <= 0 or not len(where):
            return
        sync()
        t0 = time.perf_counter()
        pool_features = embed(model, x[c_idx[pool]])
        for chunk in where.split(2048):
            features = embed(model, x[c_idx[chunk]])
            alike = pool[(features @ pool_features.T).topk(k, dim=1).indices]  # (chunk, k) collected
            yield chunk, features, specific_lift(held[chunk], judged[chunk], y_c[chunk],
                                                 held[alike], judged[alike], y_c[alike])
        sync()
        timings["score"] = timings.get("score", 0.0) + time.perf_counter() - t0

    core_classes = y[t_idx].argmax(1)
    g_partner = torch.Generator().manual_seed(config.seed + 1)  # own stream: training's is untouched

    def core_member(classes: torch.Tensor) -> torch.Tensor:
        """A random trusted core record of each given class (any core record where the core
        has none of that class)."""
        pick = t_idx[torch.randint(0, len(t_idx), classes.shape, generator=g_partner).to(device)]
        for c in torch.unique(classes).tolist():
            members = t_idx[core_classes == c]
            at = classes == c
            if len(members) and at.any():
                pick[at] = members[torch.randint(0, len(members), (int(at.sum()),),
                                                 generator=g_partner).to(device)]
        return pick

    # 1. heal from scratch on the trusted set (its core)
    model = build_network(spec).to(device)
    run("heal", model, trusted_set, config.seed_steps, config.lr, small_bs)
    # 1b. with a core, the view of every trusted record: which collected labels it firmly backs
    backed = torch.zeros(n_c, dtype=torch.bool, device=device)
    if not in_core.all():
        full = build_network(spec).to(device)
        run("heal", full, TrainSet(x[every], y[every]), config.seed_steps, config.lr,
            heal_batch(len(every)))
        backed = support(predict(full, c_idx), y_c) >= config.backed
        del full

    # 1c. optionally, the provenance test: collected records a classifier tells from trusted ones
    shifted = torch.zeros(n_c, dtype=torch.bool, device=device)
    far = torch.zeros(n_c, dtype=torch.bool, device=device)  # beyond suspect_z: not accepted if suspect
    provenance = np.full(n_c, np.nan)
    spreads = np.full(n_c, np.nan)
    beyond_cut = torch.zeros(n_c, device=device)       # trusted std beyond the set-apart cut
    whole = torch.zeros(n_c, dtype=torch.bool, device=device)  # set apart with a class or word
    by_class = torch.zeros(n_c, dtype=torch.bool, device=device)  # ... with a class
    shifted_class_names: list[str] = []
    # a few trusted images (a 0.5% set: 50): the first round's judge doubts many clean records and
    # the probes cannot tell them from poison, so far-out suspects are held back (the gate); the
    # heals memorise the trusted images, and the later rounds' judges, having learned from a
    # leaked trigger, would accept what the gate held back, so it stays out in every round
    few = records.modality in GATED_MODALITIES and len(t_idx) < config.few_trusted
    if config.provenance_z > 0 and n_c >= 2 and len(all_trusted) >= 2:
        sync()
        t0 = time.perf_counter()
        provenance, trusted_provenance = provenance_scores(
            records, folds=first_pass_folds(records, config), steps=config.provenance_steps,
            widths=config.widths, seed=config.seed, device=config.device)
        labelled = records.hard_labels[collected_index].astype(np.int64)
        group = shifted_classes(provenance, trusted_provenance, labelled, num_classes,
                                config.group_floor)
        refine = config.refine_z > 0 and records.modality in REFINED_MODALITIES
        if refine:
            provenance, trusted_provenance = refined_provenance_scores(
                records, provenance, trusted_provenance, z=config.provenance_z,
                steps=config.provenance_steps, widths=config.widths, seed=config.seed,
                device=config.device)
        spreads = trusted_spreads(provenance, trusted_provenance)
        cut = config.refine_z if refine else config.provenance_z
        spread = np.nan_to_num(spreads, nan=-np.inf)  # no trusted spread: never out
        beyond_cut = torch.from_numpy(spread - cut).float().to(device)
        shifted = beyond_cut > 0
        by_class = torch.from_numpy(group[labelled]).to(device)
        whole = by_class.clone()
        shifted |= whole
        shifted_class_names = [records.class_names[c] for c in np.flatnonzero(group)]
        if config.suspect_z > 0 and refine and few:
            far = torch.from_numpy(spread > config.suspect_z).to(device)
        timings["provenance"] = time.perf_counter() - t0
    # 1d. text: the provenance test one token at a time (a trigger word the trusted texts lack)
    planted: list[int] = []
    planted_token = np.zeros(n_c, dtype=np.int64)  # the planted token each record carries (0: none)
    carried = torch.zeros(n_c, device=device)      # ... and that token's planted share
    if config.token_alpha > 0 and records.modality == "text" and n_c and len(all_trusted):
        # whole texts where the records carry them: a trigger past the truncation counts too
        words = records.features if records.token_sets is None else records.token_sets
        shares = planted_shares(words, records.trusted, records.hard_labels, num_classes,
                                records.vocabulary_size, config.token_alpha)
        planted = np.flatnonzero(shares).tolist()
        ids = words[collected_index]
        best = ids[np.arange(n_c), shares.astype(np.float32)[ids].argmax(1)]  # its likeliest-planted token
        planted_token = np.where(shares[best] > 0, best, 0)
        carried = torch.from_numpy(shares[planted_token]).float().to(device)
        shifted |= carried > 0
        whole |= carried > 0

    score_hist, selected_hist, unlearned_hist = [], [], []
    repeat = torch.ones(len(trusted), dtype=torch.long)  # the core repeats in training
    repeat[t_idx.cpu()] = config.trusted_weight
    held, probes, spared, demoted, alike, far_suspects = None, [], 0, 0, 0, 0
    gated = torch.zeros(n_c, dtype=torch.bool, device=device)  # what the gate held back (few trusted images)
    heal_steps = 0 if few else later_heal_steps(config, records.modality)
    set_apart_only = unlearns_set_apart_only(config, records.modality)
    take_suspects = accepts_suspects(config, records.modality)
    toward_own = own_lift_weight(config, records.modality)
    not_set_apart, refused = 0, 0
    for _ in range(config.iterations):
        # 2a-c. disagreement, backdoor test, selection
        probs = judged(predict(model, c_idx))
        suspects = disagreement(probs, y_c) >= config.suspect_threshold
        held, probes = backdoor_test(model, suspects, probs)
        s = lift(held, probs, y_c)
        accepted = (s < config.threshold) & ~shifted
        if not take_suspects:  # audio: the judge is right often enough that its doubt is the poison
            refused = int((accepted & suspects).sum())
            accepted &= ~suspects
        if not selected_hist:  # the first round's judge has learned from the trusted set alone
            gated = suspects & far & ~shifted  # (set-apart records are out anyway)
            far_suspects = int((accepted & gated).sum())  # what the gate takes out
        accepted &= ~gated  # (only few trusted images have a gate: it holds in every round)
        selected_hist.append(accepted)
        s, demoted = dominance_scaled(s, probes, probs)
        score_hist.append(s)
        # 2d. train on trusted + accepted (their labels) + rejected (unlearned / relabelled / left out)
        targets = y.clone()
        use = trusted.clone()
        sure = ~accepted & (s >= config.unlearn_from)
        specific = (look_alike_test(model, sure & ~backed, suspects, held, probs)
                    if config.rejected != "drop" else sure)  # drop: nothing to unlearn or relabel
        rejected = sure & ~backed & specific
        if set_apart_only:  # audio: the probes lift hard clean clips too; unlearn what also looks foreign
            not_set_apart = int((rejected & ~shifted).sum())
            rejected &= shifted
        spared = int((sure & backed).sum())
        alike = int((sure & ~backed & ~specific).sum())
        unlearned_hist.append(rejected if config.rejected in ("unlearn", "both") else
                              torch.zeros_like(rejected))
        use[c_idx] = accepted | (rejected if config.rejected != "drop" else False)
        negative = torch.zeros_like(trusted)
        if config.rejected in ("relabel", "both"):
            targets[c_idx[rejected]] = probs[rejected]
        if config.rejected in ("unlearn", "both"):
            negative[c_idx] = rejected
        keep = torch.nonzero(use).squeeze(1)
        unlearn = config.rejected in ("unlearn", "both")
        data = TrainSet(x[keep], targets[keep], y[keep] if config.rejected == "both" else None,
                        negative[keep] if unlearn else None)
        run("train", model, data, steps_for(config.train_epochs, int(use[c_idx].sum()), config.batch_size),
            config.lr, config.batch_size, repeat=repeat[keep.cpu()])
        # 2e. heal on the trusted set
        if heal_steps:
            run("heal", model, trusted_set, heal_steps, config.heal_lr, small_bs)

    # 3. final scores: the rounds' last network's disagreement, times the last backdoor test
    probs = predict(model, c_idx)
    if held is None:  # no iteration ran: nothing was tested, disagreement is all there is
        held = torch.ones_like(probs) / num_classes
        s = 1.0 - agreement(probs, y_c)
    else:
        s, demoted = dominance_scaled(lift(held, probs, y_c), probes, probs)
        if toward_own > 0:  # a lift the look-alikes share is a content rule, not a trigger
            for chunk, _, own in own_lifts(model, s >= OWN_LIFT_FROM, suspects, held, probs):
                s[chunk] -= toward_own * (s[chunk] - own).clamp(min=0.0)
    if config.shifted_power > 0 and shifted.any():
        # a record set apart was never trained on, so the healed network cannot have learned
        # its trigger: its rejection of the label is evidence of poison that the probes may
        # have been too slow to lift (all-to-all labels), the more so the farther out it lies
        s = torch.where(shifted, torch.maximum(s, set_apart_floor(
            support(judged(probs), y_c), beyond_cut, whole, config.shifted_power,
            config.shifted_ramp, by_class, config.shifted_unsupported)), s)
    # ... and a text carrying a planted word scores at least the word's planted share
    s = torch.maximum(s, carried)
    score_hist.append(s)
    del probes
    served = probs
    retrain = bool(selected_hist) and (config.retrain if config.retrain is not None
                                       else records.modality in RETRAINED_MODALITIES)
    if retrain:
        # 4. the served network: trained from scratch on the last round's training set (the
        # records it accepted, the trusted set, the rejections it unlearns), then healed
        model = build_network(spec).to(device)
        run("retrain", model, data, steps_for(config.iterations * config.train_epochs, len(keep),
                                              config.batch_size),
            config.lr, config.batch_size, repeat=repeat[keep.cpu()])
        if heal_steps:
            run("heal", model, trusted_set, heal_steps, config.heal_lr, small_bs)
        served = predict(model, c_idx)
    t_probs = predict(model, every)
    metrics = {
        "trusted_accuracy": float((t_probs.argmax(1) == y[every].argmax(1)).float().mean()),
        "healing_core": int(len(t_idx)),
        "backed_not_unlearned": spared,
        "demoted_by_dominance": demoted,
        "left_out_for_look_alikes": alike,
        "left_out_not_set_apart": not_set_apart,
        "refused_suspects": refused,
        "left_out_for_provenance": int(shifted.sum()),
        "first_round_far_suspects": far_suspects,
        "few_trusted": few,
        "shifted_classes": shifted_class_names,
        "planted_tokens": planted,
        "retrained": retrain,
        "collected_agreement": float((served.argmax(1) == y_c.argmax(1)).float().mean()),
        "accepted_last_iteration": int(selected_hist[-1].sum()) if selected_hist else n_c,
        "prior_gap": prior_gap,
        "collected_priors": use_collected_priors,
    }
    timings["total"] = time.perf_counter() - t_start
    model = model.cpu().eval()
    return HealSelectResult(
        model=model, spec=spec, config=config, collected_index=collected_index,
        scores=s.cpu().numpy(),
        score_history=torch.stack(score_hist).cpu().numpy(),
        selected_history=(torch.stack(selected_hist).cpu().numpy() if selected_hist
                          else np.zeros((0, n_c), dtype=bool)),
        unlearned_history=(torch.stack(unlearned_hist).cpu().numpy() if unlearned_hist
                           else np.zeros((0, n_c), dtype=bool)),
        probs=probs.cpu().numpy(), served_probs=served.cpu().numpy(),
        heldout_agreement=agreement(held, y_c).cpu().numpy(),
        provenance=provenance, provenance_spreads=spreads, shifted=shifted.cpu().numpy(),
        held_back=gated.cpu().numpy(),
        planted_token=planted_token,
        timings=timings, metrics=metrics,
    )
