"""T-CoT (traceability chain of thought): its text format and the evidence its cues point at."""

from embedrl.tcot.evidence import Evidence as Evidence
from embedrl.tcot.evidence import box_to_pixels as box_to_pixels
from embedrl.tcot.evidence import crops_from_boxes as crops_from_boxes
from embedrl.tcot.evidence import extract_evidence as extract_evidence
from embedrl.tcot.evidence import frames_from_key_frames as frames_from_key_frames
from embedrl.tcot.format import MODALITIES as MODALITIES
from embedrl.tcot.format import TCoT as TCoT
from embedrl.tcot.format import TCoTFormatError as TCoTFormatError
from embedrl.tcot.format import format_reward as format_reward
from embedrl.tcot.format import parse as parse
from embedrl.tcot.format import render as render
from embedrl.tcot.format import validate as validate
